// Batch-invariant fp32 GEMM for decode steps (few rows): every element
// c[i, j] is summed over k in an order fixed by (n, k, target_blocks) alone,
// so a row's result never depends on how many rows (batch peers) there are.
// cuBLAS picks algorithms by shape and cannot promise that. FP32 FMA, never
// TF32.
#ifndef TVQ_KERNELS_CUDA_GEMM_CUDA_CUH_
#define TVQ_KERNELS_CUDA_GEMM_CUDA_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tvq::kernels::cuda {

// Floats of scratch InvariantGemm needs (split-K partial sums).
size_t InvariantGemmScratchFloats(bool transpose_b, int m, int n, int k,
                                  int target_blocks);

// Row-major c[m, n] = alpha * a[m, k] * op(b) + beta * c, op(b) = b [k, n]
// (ldb) or, with transpose_b, b^T for b [n, k]. beta = 0 does not read c.
// `target_blocks` (e.g. twice the SM count) sets how k is split; keep it
// fixed for a device so that results are reproducible.
cudaError_t InvariantGemm(bool transpose_b, int m, int n, int k, float alpha,
                          const float* a, int lda, const float* b, int ldb,
                          float beta, float* c, int ldc, float* scratch,
                          int target_blocks, cudaStream_t stream);
// The same with bfloat16 weights (b holds the 16 stored bits of each
// value), widened exactly in registers; activations and sums stay float32,
// in the same order as the float32 version.
cudaError_t InvariantGemm(bool transpose_b, int m, int n, int k, float alpha,
                          const float* a, int lda, const uint16_t* b, int ldb,
                          float beta, float* c, int ldc, float* scratch,
                          int target_blocks, cudaStream_t stream);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_GEMM_CUDA_CUH_
