// Row-major fp32 GEMMs through cuBLAS in pedantic fp32 (CUBLAS_COMPUTE_32F_
// PEDANTIC: never TF32, so VQ codes match the CPU). The one place kernels/cuda
// and the CUDA backend call cublasGemmEx / cublasGemmStridedBatchedEx.
#ifndef TVQ_KERNELS_CUDA_CUBLAS_GEMM_CUDA_CUH_
#define TVQ_KERNELS_CUDA_CUBLAS_GEMM_CUDA_CUH_

#include <cublas_v2.h>

#include <cstdint>

namespace tvq::kernels::cuda {

// c = alpha * op(a) * op(b) + beta * c, row-major, op(a) [m, k], op(b)
// [k, n]; lda/ldb/ldc are the row strides of the stored matrices.
struct RowMajorGemm {
  bool transpose_a = false;
  bool transpose_b = false;
  int m = 0, n = 0, k = 0;
  float alpha = 1;
  const float* a = nullptr;
  int lda = 0;
  const float* b = nullptr;
  int ldb = 0;
  float beta = 0;
  float* c = nullptr;
  int ldc = 0;
};

// `batch` GEMMs, the i-th on a + i * stride_a, b + i * stride_b,
// c + i * stride_c (batch 1 calls cublasGemmEx). Sizes must be >= 0; an
// empty product returns CUBLAS_STATUS_SUCCESS without a call. Runs on the
// handle's stream.
cublasStatus_t PedanticGemm(cublasHandle_t cublas, const RowMajorGemm& gemm,
                            int64_t stride_a = 0, int64_t stride_b = 0,
                            int64_t stride_c = 0, int batch = 1);

// c (float32) = alpha * op(a) * op(b) + beta * c with a and b bfloat16
// (CUDA_R_16BF, the 16 stored bits of each value) and float32 accumulation
// (CUBLAS_COMPUTE_32F): prefill GEMMs with bf16 weights, the activations
// rounded to bf16 once by the caller. Same layout rules as RowMajorGemm.
struct RowMajorGemmBF16 {
  bool transpose_a = false;
  bool transpose_b = false;
  int m = 0, n = 0, k = 0;
  float alpha = 1;
  const uint16_t* a = nullptr;
  int lda = 0;
  const uint16_t* b = nullptr;
  int ldb = 0;
  float beta = 0;
  float* c = nullptr;
  int ldc = 0;
};
cublasStatus_t Bf16Gemm(cublasHandle_t cublas, const RowMajorGemmBF16& gemm);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_CUBLAS_GEMM_CUDA_CUH_
