#include "kernels/cpu/attention_cpu.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/bf16.h"
#include "kernels/cpu/elementwise_cpu.h"

namespace tvq::kernels::cpu {
namespace {

constexpr float kExcluded = -std::numeric_limits<float>::infinity();

// Distance, from the first query of a block at `position`, of the token in
// window slot m: M - ((m - position) mod M), in [1, M].
inline int WindowDistance(int slot, int64_t position, int mem_len) {
  int64_t offset = (static_cast<int64_t>(slot) - position) % mem_len;
  if (offset < 0) offset += mem_len;
  return mem_len - static_cast<int>(offset);
}

// Exponentiates scores in place against `maximum`; returns their sum.
// Excluded entries (-inf) become 0.
inline float ExpInPlace(int n, float maximum, float* scores) {
  float sum = 0;
  for (int i = 0; i < n; ++i) {
    scores[i] = scores[i] == kExcluded ? 0.0f : std::exp(scores[i] - maximum);
    sum += scores[i];
  }
  return sum;
}

}  // namespace

HeadAttention SliceHead(const AttentionShape& shape,
                        const AttentionTables& tables,
                        const SublayerState& state, int slot, int head) {
  const int64_t H = shape.n_head, S = shape.n_code, M = shape.mem_len,
                dk = shape.d_k, dv = shape.d_v;
  const int64_t slot_head = static_cast<int64_t>(slot) * H + head;
  HeadAttention view;
  view.shape = shape;
  view.codebook = tables.codebook + head * S * dk;
  view.relative = tables.relative + head * (M + 1) * dk;
  view.u = tables.u + head * dk;
  view.v = tables.v + head * dk;
  view.counts = state.counts + slot_head * S;
  const int64_t element = DTypeSize(state.dtype);
  view.means =
      reinterpret_cast<const char*>(state.means) + slot_head * S * dv * element;
  view.window_codes = state.window_codes + slot_head * M;
  view.window_values = reinterpret_cast<const char*>(state.window_values) +
                       slot_head * M * dv * element;
  view.state_dtype = state.dtype;
  return view;
}

int DecodeScratchFloats(const HeadAttention& head) {
  return 2 * head.shape.d_k + head.shape.n_code + head.shape.mem_len + 1;
}

void DecodeAttentionWeights(const HeadAttention& head, int64_t position,
                            const float* q, int32_t code, float* weights,
                            float* scratch) {
  const int S = head.shape.n_code, M = head.shape.mem_len, dk = head.shape.d_k;
  float* qu = scratch;
  float* qv = qu + dk;
  float* code_scores = qv + dk;
  float* relative_scores = code_scores + S;  // M + 1
  for (int i = 0; i < dk; ++i) {
    qu[i] = q[i] + head.u[i];
    qv[i] = q[i] + head.v[i];
  }
  for (int s = 0; s < S; ++s) {
    code_scores[s] = Dot(dk, qu, head.codebook + static_cast<int64_t>(s) * dk);
  }
  for (int d = 0; d <= M; ++d) {
    relative_scores[d] =
        Dot(dk, qv, head.relative + static_cast<int64_t>(d) * dk);
  }
  float* window_weights = weights;
  float* own_weight = weights + M;
  float* code_weights = own_weight + 1;
  float maximum = kExcluded;
  for (int m = 0; m < M; ++m) {
    const int32_t window_code = head.window_codes[m];
    if (window_code < 0) {
      window_weights[m] = kExcluded;
      continue;
    }
    window_weights[m] = code_scores[window_code] +
                        relative_scores[WindowDistance(m, position, M)];
    maximum = std::max(maximum, window_weights[m]);
  }
  *own_weight = code_scores[code] + relative_scores[0];
  maximum = std::max(maximum, *own_weight);
  for (int s = 0; s < S; ++s) {
    if (head.shape.agg_cache && head.counts[s] > 0) {
      code_weights[s] = code_scores[s] + std::log(head.counts[s]);
      maximum = std::max(maximum, code_weights[s]);
    } else {
      code_weights[s] = kExcluded;
    }
  }
  const float sum = ExpInPlace(M + 1 + S, maximum, weights);
  const float inverse = 1.0f / sum;
  for (int i = 0; i < M + 1 + S; ++i) weights[i] *= inverse;
}

namespace {

// target += sum over rows r of weights[r] * rows[r, column_begin ..], rows of
// stride dv, in row order, rows of weight 0 skipped: one multiply and one add
// per row and value, in row order, so the bits do not depend on how the rows
// are grouped. Four rows go through at a time (Axpy4: target in registers
// across them, four streams of the state in flight), the rest one by one.
template <typename T>
void AccumulateRows(int count, const float* weights, const T* rows, int dv,
                    int column_begin, int width, float* target) {
  float alpha[4];
  const T* x[4];
  int grouped = 0;
  for (int r = 0; r < count; ++r) {
    if (weights[r] == 0) continue;
    alpha[grouped] = weights[r];
    x[grouped] = rows + static_cast<int64_t>(r) * dv + column_begin;
    if (++grouped == 4) {
      Axpy4(width, alpha, x, target);
      grouped = 0;
    }
  }
  for (int g = 0; g < grouped; ++g) Axpy(width, alpha[g], x[g], target);
}

}  // namespace

void DecodeWeightedValues(const HeadAttention& head, const float* weights,
                          const float* value, int column_begin, int column_end,
                          float* out) {
  const int S = head.shape.n_code, M = head.shape.mem_len, dv = head.shape.d_v;
  const int width = column_end - column_begin;
  float* target = out + column_begin;
  const float own_weight = weights[M];
  for (int c = 0; c < width; ++c)
    target[c] = own_weight * value[column_begin + c];
  const float* code_weights = weights + M + 1;
  if (head.state_dtype == DType::kBF16) {
    AccumulateRows(M, weights, static_cast<const BFloat16*>(head.window_values),
                   dv, column_begin, width, target);
    AccumulateRows(S, code_weights, static_cast<const BFloat16*>(head.means),
                   dv, column_begin, width, target);
    return;
  }
  AccumulateRows(M, weights, static_cast<const float*>(head.window_values), dv,
                 column_begin, width, target);
  AccumulateRows(S, code_weights, static_cast<const float*>(head.means), dv,
                 column_begin, width, target);
}

int64_t BlockScratchFloats(const HeadAttention& head, int n) {
  const int64_t rows = n;
  const int64_t widened =
      head.state_dtype == DType::kBF16
          ? static_cast<int64_t>(head.shape.mem_len + head.shape.n_code) *
                head.shape.d_v
          : 0;
  return rows * (2 * head.shape.d_k + 2 * head.shape.n_code +
                 2 * head.shape.mem_len + 1 + n) +
         widened;
}

void BlockAttention(const HeadAttention& head, int64_t first_position, int n,
                    const float* q, int q_stride, const int32_t* codes,
                    int code_stride, const float* values, int value_stride,
                    float* out, int out_stride, float* scratch) {
  const int S = head.shape.n_code, M = head.shape.mem_len, dk = head.shape.d_k,
            dv = head.shape.d_v;
  float* qu = scratch;                                     // [n, dk]
  float* qv = qu + static_cast<int64_t>(n) * dk;           // [n, dk]
  float* code_scores = qv + static_cast<int64_t>(n) * dk;  // [n, S]
  float* relative_scores =
      code_scores + static_cast<int64_t>(n) * S;  // [n, M+1]
  float* window_weights =
      relative_scores + static_cast<int64_t>(n) * (M + 1);  // [n, M]
  float* block_weights =
      window_weights + static_cast<int64_t>(n) * M;                   // [n, n]
  float* code_weights = block_weights + static_cast<int64_t>(n) * n;  // [n, S]
  // The state's values as float32: in place, or widened from bf16.
  const float* window_values = static_cast<const float*>(head.window_values);
  const float* means = static_cast<const float*>(head.means);
  if (head.state_dtype == DType::kBF16) {
    float* widened = code_weights + static_cast<int64_t>(n) * S;
    BF16ToF32Array(static_cast<int64_t>(M) * dv,
                   static_cast<const BFloat16*>(head.window_values), widened);
    BF16ToF32Array(static_cast<int64_t>(S) * dv,
                   static_cast<const BFloat16*>(head.means),
                   widened + static_cast<int64_t>(M) * dv);
    window_values = widened;
    means = widened + static_cast<int64_t>(M) * dv;
  }

  for (int i = 0; i < n; ++i) {
    const float* query = q + static_cast<int64_t>(i) * q_stride;
    for (int c = 0; c < dk; ++c) {
      qu[static_cast<int64_t>(i) * dk + c] = query[c] + head.u[c];
      qv[static_cast<int64_t>(i) * dk + c] = query[c] + head.v[c];
    }
  }
  // Scores against every code and every relative distance, as GEMMs.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, S, dk, 1.0f, qu, dk,
              head.codebook, dk, 0.0f, code_scores, S);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, M + 1, dk, 1.0f, qv,
              dk, head.relative, dk, 0.0f, relative_scores, M + 1);

  for (int i = 0; i < n; ++i) {
    const float* row_codes = code_scores + static_cast<int64_t>(i) * S;
    const float* row_relative =
        relative_scores + static_cast<int64_t>(i) * (M + 1);
    float* row_window = window_weights + static_cast<int64_t>(i) * M;
    float* row_block = block_weights + static_cast<int64_t>(i) * n;
    float* row_aggregate = code_weights + static_cast<int64_t>(i) * S;
    float maximum = kExcluded;
    // Window keys: distance from query i is WindowDistance + i. Beyond M they
    // are "bubble" keys: attended without the position term with agg_cache,
    // dropped without.
    for (int m = 0; m < M; ++m) {
      const int32_t window_code = head.window_codes[m];
      const int distance = WindowDistance(m, first_position, M) + i;
      if (window_code < 0 || (distance > M && !head.shape.agg_cache)) {
        row_window[m] = kExcluded;
        continue;
      }
      row_window[m] = row_codes[window_code] +
                      (distance <= M ? row_relative[distance] : 0.0f);
      maximum = std::max(maximum, row_window[m]);
    }
    for (int j = 0; j < n; ++j) {
      const int distance = i - j;
      if (distance < 0 || (distance > M && !head.shape.agg_cache)) {
        row_block[j] = kExcluded;
        continue;
      }
      row_block[j] = row_codes[codes[static_cast<int64_t>(j) * code_stride]] +
                     (distance <= M ? row_relative[distance] : 0.0f);
      maximum = std::max(maximum, row_block[j]);
    }
    for (int s = 0; s < S; ++s) {
      if (head.shape.agg_cache && head.counts[s] > 0) {
        row_aggregate[s] = row_codes[s] + std::log(head.counts[s]);
        maximum = std::max(maximum, row_aggregate[s]);
      } else {
        row_aggregate[s] = kExcluded;
      }
    }
    const float sum = ExpInPlace(M, maximum, row_window) +
                      ExpInPlace(n, maximum, row_block) +
                      ExpInPlace(S, maximum, row_aggregate);
    const float inverse = 1.0f / sum;
    for (int m = 0; m < M; ++m) row_window[m] *= inverse;
    for (int j = 0; j < n; ++j) row_block[j] *= inverse;
    for (int s = 0; s < S; ++s) row_aggregate[s] *= inverse;
  }

  // out = W_window * window_values + W_block * values + W_codes * means.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dv, M, 1.0f,
              window_weights, M, window_values, dv, 0.0f, out, out_stride);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dv, n, 1.0f,
              block_weights, n, values, value_stride, 1.0f, out, out_stride);
  if (head.shape.agg_cache) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dv, S, 1.0f,
                code_weights, S, means, dv, 1.0f, out, out_stride);
  }
}

}  // namespace tvq::kernels::cpu
