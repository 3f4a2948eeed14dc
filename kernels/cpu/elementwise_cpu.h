// Row-wise CPU kernels: embeddings, RMS norms, SiLU, gating, log-softmax.
// Plain loops written to vectorize; callers split rows across threads.
#ifndef TVQ_KERNELS_CPU_ELEMENTWISE_CPU_H_
#define TVQ_KERNELS_CPU_ELEMENTWISE_CPU_H_

#include <cstdint>

#include "kernels/bf16.h"

namespace tvq::kernels::cpu {

// RMS LayerNorm epsilon (inside the root), spec §2 notation.
inline constexpr float kRmsEpsilon = 1e-6f;

// Writes Sin(position) = [sin(p w_0) .. sin(p w_{D/2-1}) | cos(...)] with
// w_i = pe_lam^(-2i/D), computed in double, times `scale`, added to `row`.
void AddSinusoid(int64_t position, int width, double pe_lam, float scale,
                 float* row);

// row = embeddings[token] (+ scale * Sin(position) when add_positions).
void EmbedRow(const float* embeddings, int d_model, int32_t token,
              int64_t position, bool add_positions, float position_scale,
              double pe_lam, float* row);
// The same for a bfloat16 table (widened exactly).
void EmbedRow(const BFloat16* embeddings, int d_model, int32_t token,
              int64_t position, bool add_positions, float position_scale,
              double pe_lam, float* row);

// y = x / sqrt(eps + mean(x^2)) * gain + bias (gain/bias may be null);
// x and y may alias.
void RmsNormRow(int width, const float* x, const float* gain,
                const float* bias, float scale, float* y);

// x = max(x, 0)^2 over n values.
void SquaredReluRow(int n, float* x);

// x = silu(x) over n values.
void SiluRow(int n, float* x);

// x = x * gate over n values.
void MultiplyRow(int n, float* x, const float* gate);

// x = log_softmax((x + bias) * scale) over n values (bias may be null).
void LogSoftmaxRow(int n, const float* bias, float scale, float* x);

// Dot product of n floats (fixed summation order: results are identical
// whatever the caller's threading).
float Dot(int n, const float* a, const float* b);

// y += alpha * x over n values.
void Axpy(int n, float alpha, const float* x, float* y);
// y += alpha * x over n values, x bfloat16 (widened exactly, then the same
// multiply and add as the float version).
void Axpy(int n, float alpha, const BFloat16* x, float* y);

// y += alpha[0] * x[0]; y += alpha[1] * x[1]; ... for four rows x[0..3]
// over n values: exactly the multiplies and adds of four Axpy calls in that
// order (each y value is the same to the bit), with y read and written once
// instead of four times.
void Axpy4(int n, const float alpha[4], const float* const x[4], float* y);
void Axpy4(int n, const float alpha[4], const BFloat16* const x[4], float* y);

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_ELEMENTWISE_CPU_H_
