#include <cstdint>
#include <cstring>

#include "kernels/cuda/device_compat.cuh"
#include "kernels/cuda/gemm_cuda.cuh"
#include "kernels/cuda/reduce.cuh"

namespace tvq::kernels::cuda {
namespace {

// At most kMaxRows rows of a per block (fewer for smaller m: the tile size
// never changes how an element is summed), staged kDepth values of k at a
// time.
constexpr int kMaxRows = 16;
constexpr int kDepth = 128;
// b not transposed: one column per thread; k is split into ranges that are
// multiples of kSplitGrain.
constexpr int kColumnsPerBlock = kBlockThreads;
constexpr int kSplitGrain = 64;
// b transposed: one column per warp.
constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;

// A weight as float32: F32 as is, BF16 (its 16 stored bits) widened exactly.
__device__ __forceinline__ float LoadWeight(const float* p) { return *p; }
__device__ __forceinline__ float LoadWeight(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

__device__ __forceinline__ float Finish(float sum, float alpha, float beta,
                                        const float* c) {
  // Explicit fmaf: the same rounding in every instantiation, whatever the
  // compiler's contraction choices.
  return beta == 0.0f ? alpha * sum : fmaf(alpha, sum, beta * *c);
}

// Stages rows [first_row, first_row + kRows) x k [k0, k0 + depth) of a
// (zeros outside) into tile.
template <int kRows>
__device__ __forceinline__ void StageRows(float (*tile)[kDepth], int m,
                                          int first_row, int k0, int depth,
                                          const float* a, int lda) {
  for (int e = threadIdx.x; e < kRows * kDepth; e += blockDim.x) {
    const int r = e / kDepth, kk = e % kDepth;
    const int row = first_row + r;
    tile[r][kk] = row < m && kk < depth
                      ? a[static_cast<int64_t>(row) * lda + k0 + kk]
                      : 0.0f;
  }
}

// How k is split: a function of (n, k, target_blocks) only, never of m.
struct SplitPlan {
  int splits = 1;
  int k_per_split = 0;
};

SplitPlan PlanSplits(int n, int k, int target_blocks) {
  SplitPlan plan;
  if (k <= 0) return plan;
  const int column_blocks = static_cast<int>(CeilDiv(n, kColumnsPerBlock));
  int wanted = target_blocks / (column_blocks > 0 ? column_blocks : 1);
  const int most = k / kSplitGrain;
  if (wanted > most) wanted = most;
  if (wanted < 1) wanted = 1;
  // Ranges are multiples of kSplitGrain; recount so that none is empty.
  const int per_split = (k + wanted - 1) / wanted;
  plan.k_per_split = (per_split + kSplitGrain - 1) / kSplitGrain * kSplitGrain;
  plan.splits = (k + plan.k_per_split - 1) / plan.k_per_split;
  return plan;
}

// Block (column tile, row tile, k split). Thread j of the tile owns column
// j for kRows rows and sums its k range in ascending order.
template <int kRows, typename B>
__global__ void GemmKernel(int m, int n, int k, int k_per_split, int splits,
                           float alpha, const float* __restrict__ a, int lda,
                           const B* __restrict__ b, int ldb, float beta,
                           float* c, int ldc, float* __restrict__ partials) {
  __shared__ float tile[kRows][kDepth];
  const int column = blockIdx.x * kColumnsPerBlock + threadIdx.x;
  const int first_row = blockIdx.y * kRows;
  const int k_begin = blockIdx.z * k_per_split;
  const int k_end = k_begin + k_per_split < k ? k_begin + k_per_split : k;
  float sum[kRows];
  for (int r = 0; r < kRows; ++r) sum[r] = 0.0f;
  for (int k0 = k_begin; k0 < k_end; k0 += kDepth) {
    const int depth = k_end - k0 < kDepth ? k_end - k0 : kDepth;
    StageRows<kRows>(tile, m, first_row, k0, depth, a, lda);
    __syncthreads();
    if (column < n) {
      const B* b_column = b + static_cast<int64_t>(k0) * ldb + column;
#pragma unroll 4
      for (int kk = 0; kk < depth; ++kk) {
        const float value = LoadWeight(b_column + static_cast<int64_t>(kk) * ldb);
        for (int r = 0; r < kRows; ++r) {
          sum[r] = fmaf(tile[r][kk], value, sum[r]);
        }
      }
    }
    __syncthreads();
  }
  if (column >= n) return;
  for (int r = 0; r < kRows; ++r) {
    const int row = first_row + r;
    if (row >= m) break;
    if (splits == 1) {
      float* target = c + static_cast<int64_t>(row) * ldc + column;
      *target = Finish(sum[r], alpha, beta, target);
    } else {
      partials[(static_cast<int64_t>(blockIdx.z) * m + row) * n + column] =
          sum[r];
    }
  }
}

// c = alpha * (sum of the splits' partials, in split order) + beta * c.
__global__ void SumSplitsKernel(int m, int n, int splits, float alpha,
                                const float* __restrict__ partials, float beta,
                                float* c, int ldc) {
  const int64_t count = static_cast<int64_t>(m) * n;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < count; e += step) {
    float sum = 0;
    for (int split = 0; split < splits; ++split) {
      sum += partials[split * count + e];
    }
    float* target = c + (e / n) * ldc + e % n;
    *target = Finish(sum, alpha, beta, target);
  }
}

// b [n, k] transposed: warp w of the block owns column j; lane l sums
// k = l, l + 32, ... in order, then the lanes combine in a fixed tree.
template <int kRows, typename B>
__global__ void GemmTransposedKernel(int m, int n, int k, float alpha,
                                     const float* __restrict__ a, int lda,
                                     const B* __restrict__ b, int ldb,
                                     float beta, float* c, int ldc) {
  __shared__ float tile[kRows][kDepth];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int column = blockIdx.x * kWarpsPerBlock + warp;
  const int first_row = blockIdx.y * kRows;
  float sum[kRows];
  for (int r = 0; r < kRows; ++r) sum[r] = 0.0f;
  for (int k0 = 0; k0 < k; k0 += kDepth) {
    const int depth = k - k0 < kDepth ? k - k0 : kDepth;
    StageRows<kRows>(tile, m, first_row, k0, depth, a, lda);
    __syncthreads();
    if (column < n) {
      const B* b_row = b + static_cast<int64_t>(column) * ldb + k0;
      for (int kk = lane; kk < depth; kk += kWarpSize) {
        const float value = LoadWeight(b_row + kk);
        for (int r = 0; r < kRows; ++r) {
          sum[r] = fmaf(tile[r][kk], value, sum[r]);
        }
      }
    }
    __syncthreads();
  }
  for (int r = 0; r < kRows; ++r) {
    const float total = WarpAllReduce(sum[r], SumOp());  // every lane
    const int row = first_row + r;
    if (lane == 0 && column < n && row < m) {
      float* target = c + static_cast<int64_t>(row) * ldc + column;
      *target = Finish(total, alpha, beta, target);
    }
  }
}

// Rows per block for m rows: the smallest power of two >= m, at most
// kMaxRows.
int RowsPerBlock(int m) {
  int rows = 1;
  while (rows < m && rows < kMaxRows) rows *= 2;
  return rows;
}

template <int kRows, typename B>
cudaError_t LaunchGemm(bool transpose_b, int m, int n, int k, float alpha,
                       const float* a, int lda, const B* b, int ldb,
                       float beta, float* c, int ldc, float* scratch,
                       int target_blocks, cudaStream_t stream) {
  const unsigned row_tiles = CeilDiv(m, kRows);
  if (row_tiles > 65535) return cudaErrorInvalidValue;
  if (transpose_b) {
    const dim3 grid(CeilDiv(n, kWarpsPerBlock), row_tiles);
    auto* kernel = &GemmTransposedKernel<kRows, B>;
    TVQ_LAUNCH(kernel, grid, kBlockThreads, 0, stream)
    (m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return cudaGetLastError();
  }
  const SplitPlan plan = PlanSplits(n, k, target_blocks);
  const int splits = plan.splits, k_per_split = plan.k_per_split;
  const dim3 grid(CeilDiv(n, kColumnsPerBlock), row_tiles,
                  static_cast<unsigned>(splits));
  auto* kernel = &GemmKernel<kRows, B>;
  TVQ_LAUNCH(kernel, grid, kBlockThreads, 0, stream)
  (m, n, k, k_per_split, splits, alpha, a, lda, b, ldb, beta, c, ldc, scratch);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess || splits == 1) return error;
  const unsigned blocks = CeilDiv(static_cast<int64_t>(m) * n, kBlockThreads);
  TVQ_LAUNCH(SumSplitsKernel, blocks < 65536 ? blocks : 65536, kBlockThreads, 0,
             stream)
  (m, n, splits, alpha, scratch, beta, c, ldc);
  return cudaGetLastError();
}

}  // namespace

size_t InvariantGemmScratchFloats(bool transpose_b, int m, int n, int k,
                                  int target_blocks) {
  if (transpose_b || m <= 0 || n <= 0 || k <= 0) return 0;
  const SplitPlan plan = PlanSplits(n, k, target_blocks);
  return plan.splits > 1 ? static_cast<size_t>(plan.splits) * m * n : 0;
}

namespace {

template <typename B>
cudaError_t InvariantGemmOf(bool transpose_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const B* b, int ldb,
                            float beta, float* c, int ldc, float* scratch,
                            int target_blocks, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  if (k < 0) return cudaErrorInvalidValue;
  switch (RowsPerBlock(m)) {
    case 1:
      return LaunchGemm<1>(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                           ldc, scratch, target_blocks, stream);
    case 2:
      return LaunchGemm<2>(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                           ldc, scratch, target_blocks, stream);
    case 4:
      return LaunchGemm<4>(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                           ldc, scratch, target_blocks, stream);
    case 8:
      return LaunchGemm<8>(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                           ldc, scratch, target_blocks, stream);
    default:
      return LaunchGemm<kMaxRows>(transpose_b, m, n, k, alpha, a, lda, b, ldb,
                                  beta, c, ldc, scratch, target_blocks, stream);
  }
}

}  // namespace

cudaError_t InvariantGemm(bool transpose_b, int m, int n, int k, float alpha,
                          const float* a, int lda, const float* b, int ldb,
                          float beta, float* c, int ldc, float* scratch,
                          int target_blocks, cudaStream_t stream) {
  return InvariantGemmOf(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                         ldc, scratch, target_blocks, stream);
}

cudaError_t InvariantGemm(bool transpose_b, int m, int n, int k, float alpha,
                          const float* a, int lda, const uint16_t* b, int ldb,
                          float beta, float* c, int ldc, float* scratch,
                          int target_blocks, cudaStream_t stream) {
  return InvariantGemmOf(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                         ldc, scratch, target_blocks, stream);
}

}  // namespace tvq::kernels::cuda
