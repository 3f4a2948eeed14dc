#include "tests/bench/quadratic/softmax_rows.h"

#include <cstring>

namespace tvq::bench {
namespace {

// Rounds to the nearest integer (ties to even) by the 1.5 * 2^23 trick:
// exact for |v| < 2^22 under the default rounding mode.
constexpr float kRoundingShift = 12582912.0f;

inline float ExpNonPositiveInline(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  // ln 2 split so that n * kLn2High is exact for |n| < 2^10.
  constexpr float kLn2High = 0.693359375f;
  constexpr float kLn2Low = -2.12194440e-4f;
  x = x < -87.0f ? -87.0f : x;
  const float shifted = x * kLog2e + kRoundingShift;
  const float n = shifted - kRoundingShift;
  const float r = (x - n * kLn2High) - n * kLn2Low;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n for n in [-126, 0]: the exponent field alone.
  const int32_t exponent = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  return p * scale;
}

}  // namespace

float ExpNonPositive(float x) { return ExpNonPositiveInline(x); }

__attribute__((target_clones("avx512f", "avx2", "default"))) void
SoftmaxRowPrefix(float* row, int64_t valid, int64_t total) {
  float max = row[0];
#pragma omp simd reduction(max : max)
  for (int64_t j = 0; j < valid; ++j) max = row[j] > max ? row[j] : max;
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < valid; ++j) {
    const float e = ExpNonPositiveInline(row[j] - max);
    row[j] = e;
    sum += e;
  }
  const float inverse = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < valid; ++j) row[j] *= inverse;
  for (int64_t j = valid; j < total; ++j) row[j] = 0;
}

}  // namespace tvq::bench
