// The decode GEMM as it was before the register-blocked micro-kernels
// (kernels/cpu/skinny_gemm_cpu.cc at commit 55a79cd: 4-row x 64-column
// tiles, multiply then add, accumulators the compiler keeps where it can),
// kept only so that engine_bench can time the old and the new kernel on the
// same shapes in the same run. F32 weights only. Not used by the server.
#include "tests/bench/legacy_skinny_gemm.h"

#include <algorithm>
#include <cstdint>

namespace tvq::bench {
namespace {

constexpr int kTileColumns = 64;
constexpr int kTileRows = 4;

// Rows [row, row + rows) x columns [column, column + width), b not
// transposed: for each k, every accumulator gets a[r, k] * b[k, j] added in
// order k = 0, 1, ... (mul then add: the build does not contract to FMA, so
// every instruction-set clone gives the same bits).
// clang has no target_clones on function templates: default clone only.
#if defined(__clang__)
#define TVQ_LEGACY_TILE_CLONES
#else
#define TVQ_LEGACY_TILE_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
template <int kRows>
TVQ_LEGACY_TILE_CLONES void Tile(
    int width, int k, const float* a, int lda, const float* b, int ldb,
    float beta, float* c, int ldc) {
  float accumulators[kRows][kTileColumns] = {};
  for (int kk = 0; kk < k; ++kk) {
    const float* b_row = b + static_cast<int64_t>(kk) * ldb;
    for (int r = 0; r < kRows; ++r) {
      const float a_value = a[static_cast<int64_t>(r) * lda + kk];
      float* accumulator = accumulators[r];
      if (width == kTileColumns) {
#pragma omp simd
        for (int j = 0; j < kTileColumns; ++j) accumulator[j] += a_value * b_row[j];
      } else {
        for (int j = 0; j < width; ++j) accumulator[j] += a_value * b_row[j];
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    float* c_row = c + static_cast<int64_t>(r) * ldc;
    for (int j = 0; j < width; ++j) {
      c_row[j] = beta == 0.0f ? accumulators[r][j]
                              : accumulators[r][j] + beta * c_row[j];
    }
  }
}

// b transposed ([n, k]): one dot product per output, summed in k order in
// fixed 8-wide lanes, then the lanes in a fixed order.
__attribute__((target_clones("avx512f", "avx2", "default"))) float
LaneDot(int k, const float* x, const float* y) {
  float lanes[8] = {};
  int kk = 0;
  for (; kk + 8 <= k; kk += 8) {
#pragma omp simd
    for (int l = 0; l < 8; ++l) lanes[l] += x[kk + l] * y[kk + l];
  }
  for (; kk < k; ++kk) lanes[kk % 8] += x[kk] * y[kk];
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

}  // namespace

void LegacySkinnyGemm(bool transpose_b, int m, int n, int k, const float* a,
                int lda, const float* b, int ldb, float beta, float* c,
                int ldc, int column_begin, int column_end) {
  (void)n;
  if (transpose_b) {
    for (int i = 0; i < m; ++i) {
      const float* a_row = a + static_cast<int64_t>(i) * lda;
      float* c_row = c + static_cast<int64_t>(i) * ldc;
      for (int j = column_begin; j < column_end; ++j) {
        const float dot = LaneDot(k, a_row, b + static_cast<int64_t>(j) * ldb);
        c_row[j] = beta == 0.0f ? dot : dot + beta * c_row[j];
      }
    }
    return;
  }
  for (int column = column_begin; column < column_end; column += kTileColumns) {
    const int width = std::min(kTileColumns, column_end - column);
    int row = 0;
    for (; row + kTileRows <= m; row += kTileRows) {
      Tile<kTileRows>(width, k, a + static_cast<int64_t>(row) * lda, lda,
                      b + column, ldb, beta,
                      c + static_cast<int64_t>(row) * ldc + column, ldc);
    }
    for (; row < m; ++row) {
      Tile<1>(width, k, a + static_cast<int64_t>(row) * lda, lda, b + column,
              ldb, beta, c + static_cast<int64_t>(row) * ldc + column, ldc);
    }
  }
}

}  // namespace tvq::bench
