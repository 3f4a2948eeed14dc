#include "kernels/cuda/cublas_gemm_cuda.cuh"

namespace tvq::kernels::cuda {

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
// operands and the sizes m, n; the row strides are the leading dimensions.
cublasStatus_t PedanticGemm(cublasHandle_t cublas, const RowMajorGemm& gemm,
                            int64_t stride_a, int64_t stride_b,
                            int64_t stride_c, int batch) {
  if (gemm.m < 0 || gemm.n < 0 || gemm.k < 0 || batch < 0) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (gemm.m == 0 || gemm.n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  const cublasOperation_t op_b = gemm.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = gemm.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1) {
    return cublasGemmEx(cublas, op_b, op_a, gemm.n, gemm.m, gemm.k, &gemm.alpha,
                        gemm.b, CUDA_R_32F, gemm.ldb, gemm.a, CUDA_R_32F,
                        gemm.lda, &gemm.beta, gemm.c, CUDA_R_32F, gemm.ldc,
                        CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
  }
  return cublasGemmStridedBatchedEx(
      cublas, op_b, op_a, gemm.n, gemm.m, gemm.k, &gemm.alpha, gemm.b,
      CUDA_R_32F, gemm.ldb, stride_b, gemm.a, CUDA_R_32F, gemm.lda, stride_a,
      &gemm.beta, gemm.c, CUDA_R_32F, gemm.ldc, stride_c, batch,
      CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t Bf16Gemm(cublasHandle_t cublas, const RowMajorGemmBF16& gemm) {
  if (gemm.m < 0 || gemm.n < 0 || gemm.k < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (gemm.m == 0 || gemm.n == 0) return CUBLAS_STATUS_SUCCESS;
  const cublasOperation_t op_b = gemm.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = gemm.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  return cublasGemmEx(cublas, op_b, op_a, gemm.n, gemm.m, gemm.k, &gemm.alpha,
                      gemm.b, CUDA_R_16BF, gemm.ldb, gemm.a, CUDA_R_16BF,
                      gemm.lda, &gemm.beta, gemm.c, CUDA_R_32F, gemm.ldc,
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

}  // namespace tvq::kernels::cuda
