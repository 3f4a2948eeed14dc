// Warp and block reductions for the kernels (device code; included by the
// kernel sources only).
#ifndef TVQ_KERNELS_CUDA_REDUCE_CUH_
#define TVQ_KERNELS_CUDA_REDUCE_CUH_

#include <cmath>

#include "kernels/cuda/device_compat.cuh"

namespace tvq::kernels::cuda {

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};

struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const {
    return fmaxf(a, b);
  }
};

// Reduces over the 32 lanes of a warp; every lane gets the result. All 32
// lanes must call it.
template <typename T, typename Op>
__device__ __forceinline__ T WarpAllReduce(T value, Op op) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    value = op(value, __shfl_xor_sync(kFullMask, value, offset));
  }
  return value;
}

// Reduces over the block (blockDim.x a multiple of 32, one-dimensional);
// every thread gets the result. Every thread of the block must call it.
// `shared` holds 32 values; it may be reused as soon as this returns.
template <typename T, typename Op>
__device__ __forceinline__ T BlockAllReduce(T value, T* shared, Op op,
                                            T identity) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  value = WarpAllReduce(value, op);
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  T total = lane < warps ? shared[lane] : identity;
  total = WarpAllReduce(total, op);
  __syncthreads();
  return total;
}

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_REDUCE_CUH_
