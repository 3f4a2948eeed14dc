#include "tests/support/naive_reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace tvq::testing {
namespace {

using Matrix = std::vector<double>;  // row-major

std::vector<double> Tensor(const runtime::ModelWeights& weights,
                           const std::string& name) {
  std::span<const float> values = weights.Tensor(name);
  return std::vector<double>(values.begin(), values.end());
}

// out[T, n] = in[T, k] * w[k, n]
Matrix MatMul(const Matrix& in, int rows, int k, const std::vector<double>& w,
              int n) {
  Matrix out(static_cast<size_t>(rows) * n, 0.0);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < k; ++i) {
      const double a = in[static_cast<size_t>(r) * k + i];
      for (int j = 0; j < n; ++j) out[static_cast<size_t>(r) * n + j] += a * w[static_cast<size_t>(i) * n + j];
    }
  }
  return out;
}

void RmsInPlace(double* x, int width, const double* gain, const double* bias,
                double scale) {
  double sum = 0;
  for (int i = 0; i < width; ++i) sum += x[i] * x[i];
  const double inverse = 1.0 / std::sqrt(1e-6 + sum / width);
  for (int i = 0; i < width; ++i) {
    x[i] = x[i] * inverse * scale;
    if (gain != nullptr) x[i] *= gain[i];
    if (bias != nullptr) x[i] += bias[i];
  }
}

std::vector<double> Sinusoid(int64_t position, int width, double lam) {
  std::vector<double> row(width);
  for (int i = 0; i < width / 2; ++i) {
    const double angle = position * std::pow(lam, -2.0 * i / width);
    row[i] = std::sin(angle);
    row[width / 2 + i] = std::cos(angle);
  }
  return row;
}

double Silu(double x) { return x / (1.0 + std::exp(-x)); }

}  // namespace

NaiveResult NaiveForward(const runtime::ModelWeights& weights,
                         const std::vector<int32_t>& tokens) {
  const runtime::ModelConfig& config = weights.config();
  const int T = static_cast<int>(tokens.size());
  const int D = config.d_model, H = config.n_head, dk = config.d_k,
            dv = config.d_v, S = config.n_code, M = config.mem_len,
            V = config.n_vocab;
  const double scale = std::pow(static_cast<double>(dk), -0.25);
  NaiveResult result;

  const std::vector<double> embeddings = Tensor(weights, "token_embedder/embs");
  Matrix x(static_cast<size_t>(T) * D);
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < D; ++i) x[static_cast<size_t>(t) * D + i] = embeddings[static_cast<size_t>(tokens[t]) * D + i];
    if (config.pe_abs) {
      const double position_scale = weights.Tensor("position_embedder/scale")[0];
      const std::vector<double> sinusoid = Sinusoid(t, D, config.pe_lam);
      for (int i = 0; i < D; ++i) x[static_cast<size_t>(t) * D + i] += position_scale * sinusoid[i];
    }
  }

  for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
    const std::string prefix = runtime::SublayerPrefix(sublayer);
    const std::vector<double> gain = Tensor(weights, prefix + "input_ln/g");
    const std::vector<double> bias = Tensor(weights, prefix + "input_ln/b");
    Matrix normed = x;
    for (int t = 0; t < T; ++t) RmsInPlace(&normed[static_cast<size_t>(t) * D], D, gain.data(), bias.data(), 1.0);
    Matrix q = MatMul(normed, T, D, Tensor(weights, prefix + "q_proj/kernel"), H * dk);
    const int kvg_width = H * (dk + 2 * dv);
    Matrix kvg = MatMul(normed, T, D, Tensor(weights, prefix + "kvg_proj/kernel"), kvg_width);
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h) {
        RmsInPlace(&q[static_cast<size_t>(t) * H * dk + h * dk], dk, nullptr, nullptr, scale);
        RmsInPlace(&kvg[static_cast<size_t>(t) * kvg_width + h * dk], dk, nullptr, nullptr, scale);
      }
      for (int j = H * dk; j < kvg_width; ++j) kvg[static_cast<size_t>(t) * kvg_width + j] = Silu(kvg[static_cast<size_t>(t) * kvg_width + j]);
    }
    // Codebook and VQ.
    const std::vector<double> c_sum = Tensor(weights, prefix + "quantizer/c_sum");
    const std::vector<double> c_count = Tensor(weights, prefix + "quantizer/c_count");
    std::vector<double> codebook(c_sum.size());
    for (size_t i = 0; i < c_sum.size(); ++i) codebook[i] = c_sum[i] / std::max(c_count[i / dk], 0.01);
    std::vector<int32_t>& codes = result.codes.emplace_back(static_cast<size_t>(H) * T);
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h) {
        const double* key = &kvg[static_cast<size_t>(t) * kvg_width + h * dk];
        double best = std::numeric_limits<double>::infinity(), second = best, norm = 0;
        int best_code = 0;
        for (int c = 0; c < dk; ++c) norm += key[c] * key[c];
        for (int s = 0; s < S; ++s) {
          double distance = 0;
          for (int c = 0; c < dk; ++c) {
            const double difference = key[c] - codebook[(static_cast<size_t>(h) * S + s) * dk + c];
            distance += difference * difference;
          }
          if (distance < best) {
            second = best;
            best = distance;
            best_code = s;
          } else if (distance < second) {
            second = distance;
          }
        }
        codes[static_cast<size_t>(h) * T + t] = best_code;
        result.min_vq_margin = std::min(result.min_vq_margin, (second - best) / norm);
      }
    }
    // Relative positions r_d, u', v'.
    const std::vector<double> r_kernel = Tensor(weights, prefix + "r_proj/kernel");
    const std::vector<double> u = Tensor(weights, prefix + "u");
    const std::vector<double> v = Tensor(weights, prefix + "v");
    Matrix relative(static_cast<size_t>(M + 1) * H * dk, 0.0);
    for (int d = 0; d <= M; ++d) {
      const std::vector<double> sinusoid = Sinusoid(d, D, config.pe_lam);
      for (int i = 0; i < D; ++i) {
        for (int j = 0; j < H * dk; ++j) relative[static_cast<size_t>(d) * H * dk + j] += sinusoid[i] * r_kernel[static_cast<size_t>(i) * H * dk + j] * scale;
      }
    }
    // Attention, query by query.
    Matrix gated(static_cast<size_t>(T) * H * dv, 0.0);
    std::vector<double> scores(T);
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < H; ++h) {
        const double* query = &q[static_cast<size_t>(t) * H * dk + h * dk];
        double maximum = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= t; ++j) {
          const int distance = t - j;
          scores[j] = -std::numeric_limits<double>::infinity();
          if (distance > M && !config.agg_cache) continue;
          const double* key_hat = &codebook[(static_cast<size_t>(h) * S + codes[static_cast<size_t>(h) * T + j]) * dk];
          double score = 0;
          for (int c = 0; c < dk; ++c) score += (query[c] + u[h * dk + c] * scale) * key_hat[c];
          if (distance <= M) {
            const double* r = &relative[static_cast<size_t>(distance) * H * dk + h * dk];
            for (int c = 0; c < dk; ++c) score += (query[c] + v[h * dk + c] * scale) * r[c];
          }
          scores[j] = score;
          maximum = std::max(maximum, score);
        }
        double sum = 0;
        for (int j = 0; j <= t; ++j) {
          scores[j] = std::isinf(scores[j]) ? 0.0 : std::exp(scores[j] - maximum);
          sum += scores[j];
        }
        double* out = &gated[static_cast<size_t>(t) * H * dv + h * dv];
        for (int j = 0; j <= t; ++j) {
          const double* value = &kvg[static_cast<size_t>(j) * kvg_width + H * dk + h * dv];
          for (int c = 0; c < dv; ++c) out[c] += scores[j] / sum * value[c];
        }
        const double* gate = &kvg[static_cast<size_t>(t) * kvg_width + H * dk + H * dv + h * dv];
        for (int c = 0; c < dv; ++c) out[c] *= gate[c];
      }
    }
    Matrix residual = MatMul(gated, T, H * dv, Tensor(weights, prefix + "res_proj/kernel"), D);
    for (size_t i = 0; i < x.size(); ++i) x[i] += residual[i];
  }

  // Head.
  if (config.e_preln) {
    const std::vector<double> gain = Tensor(weights, "out_ln/g");
    const std::vector<double> bias = Tensor(weights, "out_ln/b");
    for (int t = 0; t < T; ++t) RmsInPlace(&x[static_cast<size_t>(t) * D], D, gain.data(), bias.data(), 1.0);
  }
  Matrix logits;
  std::vector<double> output_bias;
  if (config.e_tie) {
    const std::vector<double> embeddings_t = [&] {
      std::vector<double> transposed(static_cast<size_t>(D) * V);
      for (int vocab = 0; vocab < V; ++vocab)
        for (int i = 0; i < D; ++i) transposed[static_cast<size_t>(i) * V + vocab] = embeddings[static_cast<size_t>(vocab) * D + i];
      return transposed;
    }();
    logits = MatMul(x, T, D, embeddings_t, V);
    output_bias = Tensor(weights, "token_embedder/bias_out");
  } else {
    logits = MatMul(x, T, D, Tensor(weights, "out_proj/kernel"), V);
    output_bias = Tensor(weights, "out_proj/bias");
  }
  result.logprobs.resize(logits.size());
  for (int t = 0; t < T; ++t) {
    double* row = &logits[static_cast<size_t>(t) * V];
    double maximum = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < V; ++i) {
      row[i] = (row[i] + output_bias[i]) * config.e_scale;
      maximum = std::max(maximum, row[i]);
    }
    double sum = 0;
    for (int i = 0; i < V; ++i) sum += std::exp(row[i] - maximum);
    for (int i = 0; i < V; ++i) result.logprobs[static_cast<size_t>(t) * V + i] = row[i] - maximum - std::log(sum);
  }
  return result;
}

}  // namespace tvq::testing
