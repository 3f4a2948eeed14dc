#include "kernels/cpu/skinny_gemm_cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/bf16.h"

namespace tvq::kernels::cpu {
namespace {

enum class Isa { kAvx512, kAvx2, kGeneric };

Isa DetectIsa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Isa::kAvx2;
  }
  return Isa::kGeneric;
}

Isa CurrentIsa() {
  static const Isa isa = DetectIsa();
  return isa;
}

inline float Widen(float value) { return value; }
inline float Widen(BFloat16 value) { return BF16ToF32(value); }

// c = sum + beta * c, the one epilogue of every path.
inline float Epilogue(float sum, float beta, float old) {
  return beta == 0.0f ? sum : sum + beta * old;
}

// ---------------------------------------------------------------- generic
// The reference order in scalar code: std::fma rounds once, exactly as the
// vector FMA instructions do, so every path gives these bits.
template <typename B>
void GenericTile(int rows, int width, int k, const float* a, int lda,
                 const B* b, int ldb, float beta, float* c, int ldc) {
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < width; ++j) {
      float sum = 0.0f;
      for (int kk = 0; kk < k; ++kk) {
        sum = std::fma(a[static_cast<int64_t>(r) * lda + kk],
                       Widen(b[static_cast<int64_t>(kk) * ldb + j]), sum);
      }
      float* out = c + static_cast<int64_t>(r) * ldc + j;
      *out = Epilogue(sum, beta, *out);
    }
  }
}

// b transposed: 8 lanes (lane l takes k = l, l + 8, ...), reduced as
// ((0+1)+(2+3))+((4+5)+(6+7)).
template <typename B>
float GenericLaneDot(int k, const float* x, const B* y) {
  float lanes[8] = {};
  int kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] = std::fma(x[kk + l], Widen(y[kk + l]), lanes[l]);
  }
  for (; kk < k; ++kk) lanes[kk % 8] = std::fma(x[kk], Widen(y[kk]), lanes[kk % 8]);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

template <typename B>
void GenericGemm(bool transpose_b, int m, int k, const float* a, int lda,
                 const B* b, int ldb, float beta, float* c, int ldc,
                 int column_begin, int column_end) {
  if (transpose_b) {
    for (int i = 0; i < m; ++i) {
      for (int j = column_begin; j < column_end; ++j) {
        const float dot = GenericLaneDot(k, a + static_cast<int64_t>(i) * lda,
                                         b + static_cast<int64_t>(j) * ldb);
        float* out = c + static_cast<int64_t>(i) * ldc + j;
        *out = Epilogue(dot, beta, *out);
      }
    }
    return;
  }
  GenericTile(m, column_end - column_begin, k, a, lda, b + column_begin, ldb,
              beta, c + column_begin, ldc);
}

// ---------------------------------------------------------------- AVX2
#define TVQ_AVX2 __attribute__((target("avx2,fma")))

TVQ_AVX2 inline __m256 LoadAvx2(const float* p) { return _mm256_loadu_ps(p); }
TVQ_AVX2 inline __m256 LoadAvx2(const BFloat16* p) {
  const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
}

// kRows rows x 16 columns, b not transposed.
template <int kRows, typename B>
TVQ_AVX2 void Avx2Tile(int k, const float* a, int lda, const B* b, int ldb,
                       float beta, float* c, int ldc) {
  __m256 sum[kRows][2];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) sum[r][0] = sum[r][1] = _mm256_setzero_ps();
  for (int kk = 0; kk < k; ++kk) {
    const B* b_row = b + static_cast<int64_t>(kk) * ldb;
    const __m256 b0 = LoadAvx2(b_row), b1 = LoadAvx2(b_row + 8);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m256 value = _mm256_broadcast_ss(a + static_cast<int64_t>(r) * lda + kk);
      sum[r][0] = _mm256_fmadd_ps(value, b0, sum[r][0]);
      sum[r][1] = _mm256_fmadd_ps(value, b1, sum[r][1]);
    }
  }
  const __m256 beta_vector = _mm256_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    float* out = c + static_cast<int64_t>(r) * ldc;
    for (int half = 0; half < 2; ++half) {
      __m256 result = sum[r][half];
      if (beta != 0.0f) {
        result = _mm256_add_ps(result,
                               _mm256_mul_ps(beta_vector, _mm256_loadu_ps(out + 8 * half)));
      }
      _mm256_storeu_ps(out + 8 * half, result);
    }
  }
}

template <typename B>
TVQ_AVX2 float Avx2Dot(int k, const float* x, const B* y) {
  __m256 sum = _mm256_setzero_ps();
  int kk = 0;
  for (; kk + 8 <= k; kk += 8) {
    sum = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk), LoadAvx2(y + kk), sum);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  for (; kk < k; ++kk) lanes[kk % 8] = std::fma(x[kk], Widen(y[kk]), lanes[kk % 8]);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

template <typename B>
TVQ_AVX2 void Avx2Gemm(bool transpose_b, int m, int k, const float* a, int lda,
                       const B* b, int ldb, float beta, float* c, int ldc,
                       int column_begin, int column_end) {
  if (transpose_b) {
    for (int i = 0; i < m; ++i) {
      for (int j = column_begin; j < column_end; ++j) {
        const float dot = Avx2Dot(k, a + static_cast<int64_t>(i) * lda,
                                  b + static_cast<int64_t>(j) * ldb);
        float* out = c + static_cast<int64_t>(i) * ldc + j;
        *out = Epilogue(dot, beta, *out);
      }
    }
    return;
  }
  constexpr int kWidth = 16;
  int column = column_begin;
  for (; column + kWidth <= column_end; column += kWidth) {
    int row = 0;
    for (; row + 4 <= m; row += 4) {
      Avx2Tile<4>(k, a + static_cast<int64_t>(row) * lda, lda, b + column, ldb,
                  beta, c + static_cast<int64_t>(row) * ldc + column, ldc);
    }
    for (; row < m; ++row) {
      Avx2Tile<1>(k, a + static_cast<int64_t>(row) * lda, lda, b + column, ldb,
                  beta, c + static_cast<int64_t>(row) * ldc + column, ldc);
    }
  }
  if (column < column_end) {
    GenericTile(m, column_end - column, k, a, lda, b + column, ldb, beta,
                c + column, ldc);
  }
}

// ---------------------------------------------------------------- AVX-512
#define TVQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

TVQ_AVX512 inline __m512 LoadAvx512(const float* p, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, p);
}
TVQ_AVX512 inline __m512 LoadAvx512(const BFloat16* p, __mmask16 mask) {
  const __m256i half = _mm256_maskz_loadu_epi16(mask, p);
  // maskz forms: GCC 12 warns about the undefined pass-through of the plain
  // ones.
  const __m512i wide = _mm512_maskz_cvtepu16_epi32(0xffff, half);
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, wide, 16));
}

inline __mmask16 LaneMask(int count) {
  if (count >= 16) return 0xffff;
  if (count <= 0) return 0;
  return static_cast<__mmask16>((1u << count) - 1);
}

// kRows rows x up to 32 columns (width), b not transposed: 2 * kRows
// accumulators stay in registers; per k, two loads of b and kRows
// broadcasts of a feed 2 * kRows FMAs.
template <int kRows, typename B>
TVQ_AVX512 void Avx512Tile(int width, int k, const float* a, int lda,
                           const B* b, int ldb, float beta, float* c, int ldc) {
  const __mmask16 mask0 = LaneMask(width), mask1 = LaneMask(width - 16);
  __m512 sum[kRows][2];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) sum[r][0] = sum[r][1] = _mm512_setzero_ps();
  for (int kk = 0; kk < k; ++kk) {
    const B* b_row = b + static_cast<int64_t>(kk) * ldb;
    const __m512 b0 = LoadAvx512(b_row, mask0);
    const __m512 b1 = LoadAvx512(b_row + 16, mask1);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512 value = _mm512_set1_ps(a[static_cast<int64_t>(r) * lda + kk]);
      sum[r][0] = _mm512_fmadd_ps(value, b0, sum[r][0]);
      sum[r][1] = _mm512_fmadd_ps(value, b1, sum[r][1]);
    }
  }
  const __m512 beta_vector = _mm512_set1_ps(beta);
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    float* out = c + static_cast<int64_t>(r) * ldc;
    for (int half = 0; half < 2; ++half) {
      const __mmask16 mask = half == 0 ? mask0 : mask1;
      __m512 result = sum[r][half];
      if (beta != 0.0f) {
        result = _mm512_add_ps(
            result,
            _mm512_mul_ps(beta_vector, _mm512_maskz_loadu_ps(mask, out + 16 * half)));
      }
      _mm512_mask_storeu_ps(out + 16 * half, mask, result);
    }
  }
}

// The 16 lanes of `sum` added in a fixed tree (pairs, then pairs of pairs).
TVQ_AVX512 inline float ReduceLanes(__m512 sum) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  for (int width = 8; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) lanes[l] = lanes[2 * l] + lanes[2 * l + 1];
  }
  return lanes[0];
}

// b transposed: kRows rows of a x kCols rows of b, 16 lanes each (lane l
// takes k = l, l + 16, ...; a masked tail), each reduced by ReduceLanes.
template <int kRows, int kCols, typename B>
TVQ_AVX512 void Avx512DotTile(int k, const float* a, int lda, const B* b,
                              int ldb, float beta, float* c, int ldc) {
  __m512 sum[kRows][kCols];
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < kCols; ++j) sum[r][j] = _mm512_setzero_ps();
  }
  for (int kk = 0; kk < k; kk += 16) {
    const __mmask16 mask = LaneMask(k - kk);
    __m512 x[kRows], y[kCols];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      x[r] = _mm512_maskz_loadu_ps(mask, a + static_cast<int64_t>(r) * lda + kk);
    }
#pragma GCC unroll 4
    for (int j = 0; j < kCols; ++j) {
      y[j] = LoadAvx512(b + static_cast<int64_t>(j) * ldb + kk, mask);
    }
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
      for (int j = 0; j < kCols; ++j) sum[r][j] = _mm512_fmadd_ps(x[r], y[j], sum[r][j]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < kCols; ++j) {
      float* out = c + static_cast<int64_t>(r) * ldc + j;
      *out = Epilogue(ReduceLanes(sum[r][j]), beta, *out);
    }
  }
}

template <int kRows, typename B>
TVQ_AVX512 void Avx512DotRows(int k, const float* a, int lda, const B* b,
                              int ldb, float beta, float* c, int ldc,
                              int column_begin, int column_end) {
  int j = column_begin;
  for (; j + 4 <= column_end; j += 4) {
    Avx512DotTile<kRows, 4>(k, a, lda, b + static_cast<int64_t>(j) * ldb, ldb,
                            beta, c + j, ldc);
  }
  for (; j < column_end; ++j) {
    Avx512DotTile<kRows, 1>(k, a, lda, b + static_cast<int64_t>(j) * ldb, ldb,
                            beta, c + j, ldc);
  }
}

template <typename B>
TVQ_AVX512 void Avx512Gemm(bool transpose_b, int m, int k, const float* a,
                           int lda, const B* b, int ldb, float beta, float* c,
                           int ldc, int column_begin, int column_end) {
  if (transpose_b) {
    int row = 0;
    for (; row + 4 <= m; row += 4) {
      Avx512DotRows<4>(k, a + static_cast<int64_t>(row) * lda, lda, b, ldb,
                       beta, c + static_cast<int64_t>(row) * ldc, ldc,
                       column_begin, column_end);
    }
    for (; row < m; ++row) {
      Avx512DotRows<1>(k, a + static_cast<int64_t>(row) * lda, lda, b, ldb,
                       beta, c + static_cast<int64_t>(row) * ldc, ldc,
                       column_begin, column_end);
    }
    return;
  }
  constexpr int kWidth = 32;
  for (int column = column_begin; column < column_end; column += kWidth) {
    const int width = std::min(kWidth, column_end - column);
    const B* b_tile = b + column;
    int row = 0;
    for (; row + 8 <= m; row += 8) {
      Avx512Tile<8>(width, k, a + static_cast<int64_t>(row) * lda, lda, b_tile,
                    ldb, beta, c + static_cast<int64_t>(row) * ldc + column, ldc);
    }
    if (row + 4 <= m) {
      Avx512Tile<4>(width, k, a + static_cast<int64_t>(row) * lda, lda, b_tile,
                    ldb, beta, c + static_cast<int64_t>(row) * ldc + column, ldc);
      row += 4;
    }
    for (; row < m; ++row) {
      Avx512Tile<1>(width, k, a + static_cast<int64_t>(row) * lda, lda, b_tile,
                    ldb, beta, c + static_cast<int64_t>(row) * ldc + column, ldc);
    }
  }
}

template <typename B>
void Dispatch(bool transpose_b, int m, int k, const float* a, int lda,
              const B* b, int ldb, float beta, float* c, int ldc,
              int column_begin, int column_end) {
  switch (CurrentIsa()) {
    case Isa::kAvx512:
      Avx512Gemm(transpose_b, m, k, a, lda, b, ldb, beta, c, ldc, column_begin,
                 column_end);
      return;
    case Isa::kAvx2:
      Avx2Gemm(transpose_b, m, k, a, lda, b, ldb, beta, c, ldc, column_begin,
               column_end);
      return;
    case Isa::kGeneric:
      GenericGemm(transpose_b, m, k, a, lda, b, ldb, beta, c, ldc,
                  column_begin, column_end);
      return;
  }
}

}  // namespace

const char* SkinnyGemmIsa() {
  switch (CurrentIsa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kGeneric:
      return "generic";
  }
  return "generic";
}

void SkinnyGemm(bool transpose_b, int m, int n, int k, const float* a,
                int lda, const void* b, DType b_dtype, int ldb, float beta,
                float* c, int ldc, int column_begin, int column_end) {
  (void)n;
  if (column_end <= column_begin || m <= 0) return;
  if (b_dtype == DType::kBF16) {
    Dispatch(transpose_b, m, k, a, lda, static_cast<const BFloat16*>(b), ldb,
             beta, c, ldc, column_begin, column_end);
  } else {
    Dispatch(transpose_b, m, k, a, lda, static_cast<const float*>(b), ldb,
             beta, c, ldc, column_begin, column_end);
  }
}

}  // namespace tvq::kernels::cpu
