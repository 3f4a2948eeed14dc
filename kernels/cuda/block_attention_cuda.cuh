// Block (prefill) attention of n consecutive queries of one slot on CUDA,
// composed like kernels/cpu/attention_cpu's BlockAttention: two batched
// pedantic-fp32 GEMMs for the code and relative scores, the masking /
// softmax kernel of attention_cuda, and two or three batched GEMMs for the
// weighted values. The CUDA backend only checks arguments and calls this.
#ifndef TVQ_KERNELS_CUDA_BLOCK_ATTENTION_CUDA_CUH_
#define TVQ_KERNELS_CUDA_BLOCK_ATTENTION_CUDA_CUH_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_types.h"

namespace tvq::kernels::cuda {

// What failed in a composed launch: a kernel (cuda != cudaSuccess) or a
// cuBLAS call (cublas != CUBLAS_STATUS_SUCCESS); `call` names it.
struct ComposedStatus {
  cudaError_t cuda = cudaSuccess;
  cublasStatus_t cublas = CUBLAS_STATUS_SUCCESS;
  const char* call = nullptr;
  bool ok() const {
    return cuda == cudaSuccess && cublas == CUBLAS_STATUS_SUCCESS;
  }
};

// Floats of device scratch BlockAttention needs for n queries.
size_t BlockAttentionScratchFloats(const AttentionShape& shape, int n);

// Attention of queries q + i * q_stride ([H, d_k] each), positions
// first_position + i, i < n, of slot `slot` against its state (read only)
// and the block's own keys (codes[i * H + h]) and values (values + i *
// value_stride + h * d_v). Writes out [n, H * d_v] contiguous. F32 tables
// and state; `cublas` must be bound to `stream`.
ComposedStatus BlockAttention(const AttentionShape& shape,
                              const AttentionTables& tables,
                              const SublayerState& state, int slot,
                              int64_t first_position, int n, const float* q,
                              int q_stride, const int32_t* codes,
                              const float* values, int value_stride, float* out,
                              float* scratch, cublasHandle_t cublas,
                              cudaStream_t stream);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_BLOCK_ATTENTION_CUDA_CUH_
