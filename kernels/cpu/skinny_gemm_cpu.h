// GEMM for few rows (decode batches) whose every output row is computed the
// same way whatever the other rows are: batch-invariant by construction.
#ifndef TVQ_KERNELS_CPU_SKINNY_GEMM_CPU_H_
#define TVQ_KERNELS_CPU_SKINNY_GEMM_CPU_H_

#include <cstdint>

namespace tvq::kernels::cpu {

// c[m, n] = a[m, k] * op(b) + beta * c, row-major. op(b) = b [k, n] (ldb) or,
// with transpose_b, b^T for b [n, k]. Each c[i, j] is summed over k in the
// same order for any m, so rows never depend on their batch peers.
// Computes the columns [column_begin, column_end) only (callers split columns
// across threads).
void SkinnyGemm(bool transpose_b, int m, int n, int k, const float* a,
                int lda, const float* b, int ldb, float beta, float* c,
                int ldc, int column_begin, int column_end);

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_SKINNY_GEMM_CPU_H_
