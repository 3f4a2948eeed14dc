#include "kernels/cpu/elementwise_cpu.h"

#include <algorithm>
#include <cmath>

namespace tvq::kernels::cpu {

void AddSinusoid(int64_t position, int width, double pe_lam, float scale,
                 float* row) {
  const int half = width / 2;
  for (int i = 0; i < half; ++i) {
    const double frequency =
        1.0 / std::pow(pe_lam, static_cast<double>(2 * i) / width);
    const double angle = static_cast<double>(position) * frequency;
    row[i] += scale * static_cast<float>(std::sin(angle));
    row[half + i] += scale * static_cast<float>(std::cos(angle));
  }
}

void EmbedRow(const float* embeddings, int d_model, int32_t token,
              int64_t position, bool add_positions, float position_scale,
              double pe_lam, float* row) {
  const float* source = embeddings + static_cast<int64_t>(token) * d_model;
  std::copy(source, source + d_model, row);
  if (add_positions) {
    AddSinusoid(position, d_model, pe_lam, position_scale, row);
  }
}

void EmbedRow(const BFloat16* embeddings, int d_model, int32_t token,
              int64_t position, bool add_positions, float position_scale,
              double pe_lam, float* row) {
  BF16ToF32Array(d_model, embeddings + static_cast<int64_t>(token) * d_model,
                 row);
  if (add_positions) {
    AddSinusoid(position, d_model, pe_lam, position_scale, row);
  }
}

// The hot loops get one clone per instruction set; the dynamic loader picks
// one per machine, so results stay reproducible on a given machine.
__attribute__((target_clones("avx512f", "avx2", "default"))) float Dot(
    int n, const float* a, const float* b) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void Axpy(
    int n, float alpha, const float* x, float* y) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void Axpy(
    int n, float alpha, const BFloat16* x, float* y) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * BF16ToF32(x[i]);
}

namespace {

inline float Widen(float value) { return value; }
inline float Widen(BFloat16 value) { return BF16ToF32(value); }

// The body of both Axpy4 overloads, inlined into each instruction-set clone.
template <typename T>
__attribute__((always_inline)) inline void Axpy4Rows(int n,
                                                     const float alpha[4],
                                                     const T* const x[4],
                                                     float* y) {
  const float a0 = alpha[0], a1 = alpha[1], a2 = alpha[2], a3 = alpha[3];
  const T* x0 = x[0];
  const T* x1 = x[1];
  const T* x2 = x[2];
  const T* x3 = x[3];
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    float sum = y[i];
    sum += a0 * Widen(x0[i]);
    sum += a1 * Widen(x1[i]);
    sum += a2 * Widen(x2[i]);
    sum += a3 * Widen(x3[i]);
    y[i] = sum;
  }
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default"))) void Axpy4(
    int n, const float alpha[4], const float* const x[4], float* y) {
  Axpy4Rows(n, alpha, x, y);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void Axpy4(
    int n, const float alpha[4], const BFloat16* const x[4], float* y) {
  Axpy4Rows(n, alpha, x, y);
}

void RmsNormRow(int width, const float* x, const float* gain,
                const float* bias, float scale, float* y) {
  float sum_squares = 0;
#pragma omp simd reduction(+ : sum_squares)
  for (int i = 0; i < width; ++i) sum_squares += x[i] * x[i];
  const float inverse =
      scale / std::sqrt(kRmsEpsilon + sum_squares / static_cast<float>(width));
  if (gain != nullptr && bias != nullptr) {
#pragma omp simd
    for (int i = 0; i < width; ++i) y[i] = x[i] * inverse * gain[i] + bias[i];
  } else if (gain != nullptr) {
#pragma omp simd
    for (int i = 0; i < width; ++i) y[i] = x[i] * inverse * gain[i];
  } else {
#pragma omp simd
    for (int i = 0; i < width; ++i) y[i] = x[i] * inverse;
    if (bias != nullptr) {
      for (int i = 0; i < width; ++i) y[i] += bias[i];
    }
  }
}

void SquaredReluRow(int n, float* x) {
  for (int i = 0; i < n; ++i) {
    const float positive = x[i] > 0.0f ? x[i] : 0.0f;
    x[i] = positive * positive;
  }
}

void SiluRow(int n, float* x) {
  for (int i = 0; i < n; ++i) {
    // x * sigmoid(x); for very negative x, exp(-x) overflows to inf and the
    // quotient is the correct limit, -0.
    x[i] = x[i] / (1.0f + std::exp(-x[i]));
  }
}

void MultiplyRow(int n, float* x, const float* gate) {
#pragma omp simd
  for (int i = 0; i < n; ++i) x[i] *= gate[i];
}

void LogSoftmaxRow(int n, const float* bias, float scale, float* x) {
  float maximum = -INFINITY;
  for (int i = 0; i < n; ++i) {
    x[i] = (bias != nullptr ? x[i] + bias[i] : x[i]) * scale;
    maximum = std::max(maximum, x[i]);
  }
  // Accumulate the partition function in double: vocabularies reach 32k+.
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i] - maximum));
  const float log_sum = maximum + static_cast<float>(std::log(sum));
  for (int i = 0; i < n; ++i) x[i] -= log_sum;
}

}  // namespace tvq::kernels::cpu
