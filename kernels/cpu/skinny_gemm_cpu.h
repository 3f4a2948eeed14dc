// GEMM for few rows (decode batches) whose every output row is computed the
// same way whatever the other rows are: batch-invariant by construction.
//
// The weights operand b may be float32 or bfloat16 (widened exactly to
// float32 in registers); activations, accumulation and c are float32.
// Register-blocked micro-kernels for AVX-512 (8 rows x 32 columns) and
// AVX2 + FMA (4 rows x 16 columns), picked once per process from cpuid,
// and a portable fallback. Every path computes an element of c as the same
// chain of fused multiply-adds over k (b not transposed), so the row
// blocking, the batch size and the column split never change a bit.
#ifndef TVQ_KERNELS_CPU_SKINNY_GEMM_CPU_H_
#define TVQ_KERNELS_CPU_SKINNY_GEMM_CPU_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace tvq::kernels::cpu {

// The instruction set SkinnyGemm runs with on this machine: "avx512",
// "avx2" or "generic".
const char* SkinnyGemmIsa();

// Columns a caller's column split should be a multiple of (the widest
// micro-kernel tile), so that threads never share a tile.
inline constexpr int kSkinnyGemmColumnBlock = 64;

// c[m, n] = a[m, k] * op(b) + beta * c, row-major. op(b) = b [k, n] (ldb) or,
// with transpose_b, b^T for b [n, k]; b holds float (kF32) or bfloat16
// (kBF16) elements. Each c[i, j] is summed over k in the same order for any
// m: b not transposed, c[i, j] = fma(a[i, k-1], b[k-1, j], ... fma(a[i, 0],
// b[0, j], 0)); transposed, in fixed vector lanes reduced in a fixed order.
// Then c = sum + beta * c (beta == 0: c = sum). Computes the columns
// [column_begin, column_end) only (callers split columns across threads).
void SkinnyGemm(bool transpose_b, int m, int n, int k, const float* a,
                int lda, const void* b, DType b_dtype, int ldb, float beta,
                float* c, int ldc, int column_begin, int column_end);

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_SKINNY_GEMM_CPU_H_
