#include "tests/bench/quadratic/quadratic_transformer.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <unordered_set>

#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"

namespace tvq::bench {

using runtime::F32;
using runtime::TensorView;

struct QuadraticTransformer::Sublayer {
  TensorView input_ln_gain, input_ln_bias, q_kernel, kvg_kernel, res_kernel;
};

QuadraticTransformer::QuadraticTransformer(const runtime::ModelConfig& config,
                                           runtime::Backend& backend,
                                           const QuadraticOptions& options)
    : config_(config), backend_(backend), options_(options) {}

QuadraticTransformer::~QuadraticTransformer() = default;

size_t QuadraticTransformer::CacheBytesPerToken(
    const runtime::ModelConfig& config) {
  return sizeof(float) * static_cast<size_t>(config.num_sublayers()) *
         config.n_head * (config.d_k + config.d_v);
}

absl::StatusOr<std::unique_ptr<QuadraticTransformer>>
QuadraticTransformer::Create(const runtime::ModelWeights& weights,
                             runtime::Backend& backend,
                             const QuadraticOptions& options) {
  const runtime::ModelConfig& config = weights.config();
  if (options.num_slots < 1 || options.max_context < 1 ||
      options.max_prefill_chunk < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "quadratic baseline: num_slots, max_context and max_prefill_chunk "
        "must be >= 1, got %d, %d, %d",
        options.num_slots, options.max_context, options.max_prefill_chunk));
  }
  if (config.e_tie || config.e_preln) {
    return absl::UnimplementedError(
        "quadratic baseline: tied embeddings and the output norm are not "
        "built (the benchmark models use neither)");
  }
  std::unique_ptr<QuadraticTransformer> model(
      new QuadraticTransformer(config, backend, options));
  auto upload = [&](const std::string& name) -> absl::StatusOr<TensorView> {
    const TensorView host = weights.View(name);
    if (host.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("quadratic baseline: tensor \"%s\" is missing", name));
    }
    return backend.UploadWeights(host,
                                 &model->weight_storage_.emplace_back());
  };
  TVQ_ASSIGN_OR_RETURN(model->embeddings_, upload("token_embedder/embs"));
  TVQ_ASSIGN_OR_RETURN(model->output_kernel_, upload("out_proj/kernel"));
  TVQ_ASSIGN_OR_RETURN(model->output_bias_, upload("out_proj/bias"));
  model->sublayers_.resize(config.num_sublayers());
  for (int index = 0; index < config.num_sublayers(); ++index) {
    Sublayer& sublayer = model->sublayers_[index];
    const std::string prefix = runtime::SublayerPrefix(index);
    TVQ_ASSIGN_OR_RETURN(sublayer.input_ln_gain, upload(prefix + "input_ln/g"));
    TVQ_ASSIGN_OR_RETURN(sublayer.input_ln_bias, upload(prefix + "input_ln/b"));
    TVQ_ASSIGN_OR_RETURN(sublayer.q_kernel, upload(prefix + "q_proj/kernel"));
    TVQ_ASSIGN_OR_RETURN(sublayer.kvg_kernel, upload(prefix + "kvg_proj/kernel"));
    TVQ_ASSIGN_OR_RETURN(sublayer.res_kernel, upload(prefix + "res_proj/kernel"));
  }
  const size_t cache_bytes =
      CacheBytesPerToken(config) * static_cast<size_t>(options.max_context);
  for (int slot = 0; slot < options.num_slots; ++slot) {
    absl::StatusOr<runtime::DeviceBuffer> cache = backend.Allocate(cache_bytes);
    if (!cache.ok()) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "quadratic baseline: the KV cache of slot %d (%d tokens, %d bytes) "
          "does not fit: %s",
          slot, options.max_context, cache_bytes, cache.status().message()));
    }
    model->caches_.push_back(*std::move(cache));
  }
  model->positions_.assign(options.num_slots, 0);
  TVQ_ASSIGN_OR_RETURN(
      model->attention_,
      SoftmaxAttention::Create(
          backend, {config.n_head, config.d_k, config.d_v}, options.threads,
          std::min<int64_t>(options.query_block, options.max_prefill_chunk),
          options.max_context));
  return model;
}

float* QuadraticTransformer::Cache(int slot, int sublayer) const {
  const int64_t row = config_.n_head * (config_.d_k + config_.d_v);
  return caches_[slot].as<float>() +
         static_cast<int64_t>(sublayer) * options_.max_context * row;
}

absl::Status QuadraticTransformer::Reset(int slot) {
  if (slot < 0 || slot >= num_slots()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic baseline: slot %d outside [0, %d)", slot, num_slots()));
  }
  positions_[slot] = 0;
  return absl::OkStatus();
}

absl::Status QuadraticTransformer::Truncate(int slot, int64_t length) {
  if (slot < 0 || slot >= num_slots()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic baseline: slot %d outside [0, %d)", slot, num_slots()));
  }
  if (length < 0 || length > positions_[slot]) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic baseline: cannot truncate slot %d of %d tokens to %d",
        slot, positions_[slot], length));
  }
  positions_[slot] = length;
  return absl::OkStatus();
}

absl::Status QuadraticTransformer::CopySlot(int from, int to) {
  if (from < 0 || from >= num_slots() || to < 0 || to >= num_slots() ||
      from == to) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic baseline: cannot copy slot %d to slot %d of %d", from, to,
        num_slots()));
  }
  TVQ_RETURN_IF_ERROR(backend_.CopyOnDevice(
      caches_[to].get(), caches_[from].get(), caches_[from].bytes()));
  positions_[to] = positions_[from];
  return absl::OkStatus();
}

absl::Status QuadraticTransformer::SynthesizeContext(int slot, int64_t length,
                                                     uint32_t seed) {
  TVQ_RETURN_IF_ERROR(Reset(slot));
  if (length < 0 || length > options_.max_context) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic baseline: context %d outside [0, %d]", length,
        options_.max_context));
  }
  const int H = config_.n_head, dk = config_.d_k, dv = config_.d_v;
  const int row = H * (dk + dv);
  // Keys as after the head RMS norm (|k| = sqrt(d_k) d_k^-1/4 per head):
  // uniform entries of that mean square; values uniform in [-1, 1].
  const float key_bound =
      std::sqrt(3.0f) * std::pow(static_cast<float>(dk), -0.25f);
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> block(static_cast<size_t>(std::min<int64_t>(length, 4096)) * row);
  for (int sublayer = 0; sublayer < config_.num_sublayers(); ++sublayer) {
    float* cache = Cache(slot, sublayer);
    for (int64_t begin = 0; begin < length; begin += 4096) {
      const int64_t rows = std::min<int64_t>(4096, length - begin);
      for (int64_t r = 0; r < rows; ++r) {
        for (int c = 0; c < row; ++c) {
          block[r * row + c] = uniform(generator) * (c < H * dk ? key_bound : 1.0f);
        }
      }
      TVQ_RETURN_IF_ERROR(backend_.CopyToDevice(
          cache + begin * row, block.data(), sizeof(float) * rows * row));
    }
  }
  positions_[slot] = length;
  return absl::OkStatus();
}

absl::Status QuadraticTransformer::Prefill(int slot,
                                           std::span<const int32_t> tokens,
                                           bool last_logprobs,
                                           std::vector<float>* logprobs) {
  if (slot < 0 || slot >= num_slots()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic baseline: prefill slot %d outside [0, %d)", slot,
        num_slots()));
  }
  if (last_logprobs && logprobs == nullptr) {
    return absl::InvalidArgumentError(
        "quadratic baseline: prefill logprobs output is null");
  }
  if (logprobs != nullptr) logprobs->clear();
  const int slots[1] = {slot};
  for (size_t begin = 0; begin < tokens.size();
       begin += options_.max_prefill_chunk) {
    const size_t count = std::min<size_t>(options_.max_prefill_chunk,
                                          tokens.size() - begin);
    const bool last = begin + count == tokens.size();
    TVQ_RETURN_IF_ERROR(Forward(slots, tokens.subspan(begin, count),
                                /*prefill=*/true, false,
                                last && last_logprobs ? logprobs : nullptr));
  }
  return absl::OkStatus();
}

absl::Status QuadraticTransformer::DecodeStep(std::span<const int> slots,
                                              std::span<const int32_t> tokens,
                                              std::vector<float>* logprobs) {
  if (slots.size() != tokens.size() || slots.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "quadratic baseline: decode needs one token per slot, got %d slots "
        "and %d tokens",
        slots.size(), tokens.size()));
  }
  if (logprobs == nullptr) {
    return absl::InvalidArgumentError(
        "quadratic baseline: decode logprobs output is null");
  }
  std::unordered_set<int> seen;
  for (const int slot : slots) {
    if (slot < 0 || slot >= num_slots()) {
      return absl::OutOfRangeError(absl::StrFormat(
          "quadratic baseline: decode slot %d outside [0, %d)", slot,
          num_slots()));
    }
    if (!seen.insert(slot).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "quadratic baseline: slot %d appears twice in one batch", slot));
    }
  }
  logprobs->clear();
  return Forward(slots, tokens, /*prefill=*/false, true, logprobs);
}

absl::Status QuadraticTransformer::Forward(std::span<const int> slots,
                                           std::span<const int32_t> tokens,
                                           bool prefill,
                                           bool logprobs_of_all_rows,
                                           std::vector<float>* logprobs) {
  const int n = static_cast<int>(tokens.size());
  if (n == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(runtime::CheckTokenIds(tokens, config_.n_vocab, "tokens"));
  const int D = config_.d_model, H = config_.n_head, dk = config_.d_k,
            dv = config_.d_v, V = config_.n_vocab;
  const int q_stride = H * dk, kvg_stride = H * (dk + 2 * dv),
            attention_stride = H * dv, row = H * (dk + dv);

  std::vector<int64_t> positions(n);
  for (int i = 0; i < n; ++i) {
    const int slot = prefill ? slots[0] : slots[i];
    positions[i] = positions_[slot] + (prefill ? i : 0);
    if (positions[i] >= options_.max_context) {
      return absl::OutOfRangeError(absl::StrFormat(
          "quadratic baseline: slot %d would hold %d tokens, its cache holds "
          "%d",
          slot, positions[i] + 1, options_.max_context));
    }
  }
  if (workspace_rows_ < n) {
    const size_t rows = static_cast<size_t>(n);
    TVQ_ASSIGN_OR_RETURN(x_, backend_.Allocate(sizeof(float) * rows * D));
    TVQ_ASSIGN_OR_RETURN(normed_, backend_.Allocate(sizeof(float) * rows * D));
    TVQ_ASSIGN_OR_RETURN(q_, backend_.Allocate(sizeof(float) * rows * q_stride));
    TVQ_ASSIGN_OR_RETURN(kvg_, backend_.Allocate(sizeof(float) * rows * kvg_stride));
    TVQ_ASSIGN_OR_RETURN(attention_out_,
                         backend_.Allocate(sizeof(float) * rows * attention_stride));
    TVQ_ASSIGN_OR_RETURN(logits_, backend_.Allocate(sizeof(float) * rows * V));
    workspace_rows_ = n;
  }
  float* x = x_.as<float>();
  float* normed = normed_.as<float>();
  float* q = q_.as<float>();
  float* kvg = kvg_.as<float>();
  float* attention = attention_out_.as<float>();

  TVQ_RETURN_IF_ERROR(backend_.Embed(embeddings_, tokens.data(),
                                     positions.data(), n, /*add_positions=*/true,
                                     /*position_scale=*/1.0f, config_.pe_lam, x));
  const float key_scale =
      static_cast<float>(std::pow(static_cast<double>(dk), -0.25));
  for (int index = 0; index < config_.num_sublayers(); ++index) {
    const Sublayer& sublayer = sublayers_[index];
    TVQ_RETURN_IF_ERROR(backend_.RmsNorm(n, D, x, D, sublayer.input_ln_gain,
                                         sublayer.input_ln_bias, normed, D));
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(normed, {n, D}),
                                       .b = sublayer.q_kernel,
                                       .c = F32(q, {n, q_stride}),
                                       .batch_invariant = !prefill}));
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(normed, {n, D}),
                                       .b = sublayer.kvg_kernel,
                                       .c = F32(kvg, {n, kvg_stride}),
                                       .batch_invariant = !prefill}));
    TVQ_RETURN_IF_ERROR(backend_.HeadRmsNorm(n, H, dk, q, q_stride, key_scale));
    TVQ_RETURN_IF_ERROR(backend_.HeadRmsNorm(n, H, dk, kvg, kvg_stride, key_scale));
    float* gates = kvg + H * dk + H * dv;
    TVQ_RETURN_IF_ERROR(backend_.Silu(n, 2 * H * dv, kvg + H * dk, kvg_stride));
    // Append [k | v] of every row to its sequence's cache.
    for (int i = 0; i < n; ++i) {
      const int slot = prefill ? slots[0] : slots[i];
      TVQ_RETURN_IF_ERROR(backend_.CopyOnDevice(
          Cache(slot, index) + positions[i] * row,
          kvg + static_cast<int64_t>(i) * kvg_stride, sizeof(float) * row));
    }
    if (prefill) {
      TVQ_RETURN_IF_ERROR(attention_->Run(q, q_stride, positions[0], n,
                                          Cache(slots[0], index), attention,
                                          attention_stride, /*decode=*/false));
    } else {
      for (int i = 0; i < n; ++i) {
        TVQ_RETURN_IF_ERROR(attention_->Run(
            q + static_cast<int64_t>(i) * q_stride, q_stride, positions[i], 1,
            Cache(slots[i], index),
            attention + static_cast<int64_t>(i) * attention_stride,
            attention_stride, /*decode=*/true));
      }
    }
    TVQ_RETURN_IF_ERROR(backend_.Multiply(n, attention_stride, attention,
                                          attention_stride, gates, kvg_stride));
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(attention, {n, attention_stride}),
                                       .b = sublayer.res_kernel,
                                       .beta = 1,
                                       .c = F32(x, {n, D}),
                                       .batch_invariant = !prefill}));
  }
  if (prefill) {
    positions_[slots[0]] += n;
  } else {
    for (int i = 0; i < n; ++i) positions_[slots[i]] = positions[i] + 1;
  }
  if (logprobs == nullptr) return absl::OkStatus();

  const int first_row = logprobs_of_all_rows ? 0 : n - 1;
  const int rows = n - first_row;
  float* logits = logits_.as<float>();
  TVQ_RETURN_IF_ERROR(backend_.Gemm(
      {.a = F32(x + static_cast<int64_t>(first_row) * D, {rows, D}),
       .b = output_kernel_,
       .c = F32(logits, {rows, V}),
       .batch_invariant = !prefill}));
  TVQ_RETURN_IF_ERROR(backend_.LogSoftmax(
      rows, V, output_bias_, static_cast<float>(config_.e_scale), logits));
  logprobs->resize(static_cast<size_t>(rows) * V);
  return backend_.CopyToHost(logprobs->data(), logits,
                             sizeof(float) * rows * V);
}

}  // namespace tvq::bench
