// The pre-micro-kernel decode GEMM, for engine_bench's side-by-side timing.
#ifndef TVQ_TESTS_BENCH_LEGACY_SKINNY_GEMM_H_
#define TVQ_TESTS_BENCH_LEGACY_SKINNY_GEMM_H_

namespace tvq::bench {

// Same contract as kernels::cpu::SkinnyGemm for F32 weights.
void LegacySkinnyGemm(bool transpose_b, int m, int n, int k, const float* a,
                      int lda, const float* b, int ldb, float beta, float* c,
                      int ldc, int column_begin, int column_end);

}  // namespace tvq::bench

#endif  // TVQ_TESTS_BENCH_LEGACY_SKINNY_GEMM_H_
