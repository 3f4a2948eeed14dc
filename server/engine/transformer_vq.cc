#include "server/engine/transformer_vq.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_set>

#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"
#include "server/engine/transformer_vq_internal.h"

namespace tvq::runtime {

// Weights and input-independent tables of one attention sublayer.
struct TransformerVq::Sublayer {
  TensorView input_ln_gain;  // [D]
  TensorView input_ln_bias;  // [D]
  TensorView q_kernel;       // [D, H*dk]
  TensorView kvg_kernel;     // [D, H*(dk + 2 dv)]
  TensorView res_kernel;     // [H*dv, D]
  // Derived at load (spec §2): codebook, |c|^2, r_0..r_M, u', v'.
  std::vector<float> codebook, codebook_sq_norm, relative, u, v;
  AttentionTables tables;
};

// The activation workspace: transformer_vq_internal.h.

void SinusoidDouble(int64_t position, int width, double pe_lam, double* row) {
  const int half = width / 2;
  for (int i = 0; i < half; ++i) {
    const double angle =
        static_cast<double>(position) / std::pow(pe_lam, 2.0 * i / width);
    row[i] = std::sin(angle);
    row[half + i] = std::cos(angle);
  }
}

void DeriveCodebook(std::span<const float> c_sum, std::span<const float> c_count,
                    int heads, int codes, int dk, std::vector<float>* codebook,
                    std::vector<float>* sq_norm) {
  codebook->resize(static_cast<size_t>(heads) * codes * dk);
  sq_norm->resize(static_cast<size_t>(heads) * codes);
  for (int hs = 0; hs < heads * codes; ++hs) {
    const double count = std::max(static_cast<double>(c_count[hs]), 0.01);
    float norm = 0;
    for (int c = 0; c < dk; ++c) {
      const float value =
          static_cast<float>(c_sum[static_cast<size_t>(hs) * dk + c] / count);
      (*codebook)[static_cast<size_t>(hs) * dk + c] = value;
      norm += value * value;
    }
    (*sq_norm)[hs] = norm;
  }
}

void DeriveRelativeTable(std::span<const float> r_kernel, int heads,
                         int mem_len, int d_model, int dk, double pe_lam,
                         double key_scale, std::vector<float>* relative) {
  const int M = mem_len;
  relative->assign(static_cast<size_t>(heads) * (M + 1) * dk, 0.0f);
  std::vector<double> sinusoid(d_model);
  std::vector<double> row(static_cast<size_t>(heads) * dk);
  for (int d = 0; d <= M; ++d) {
    SinusoidDouble(d, d_model, pe_lam, sinusoid.data());
    std::fill(row.begin(), row.end(), 0.0);
    for (int i = 0; i < d_model; ++i) {
      const float* kernel_row =
          r_kernel.data() + static_cast<size_t>(i) * heads * dk;
      for (int j = 0; j < heads * dk; ++j) row[j] += sinusoid[i] * kernel_row[j];
    }
    for (int h = 0; h < heads; ++h) {
      for (int c = 0; c < dk; ++c) {
        (*relative)[(static_cast<size_t>(h) * (M + 1) + d) * dk + c] =
            static_cast<float>(row[static_cast<size_t>(h) * dk + c] *
                               key_scale);
      }
    }
  }
}

namespace {

absl::Status CheckTokens(std::span<const int32_t> tokens, int n_vocab) {
  return CheckTokenIds(tokens, n_vocab, "tokens");
}

}  // namespace

TransformerVq::TransformerVq(const ModelConfig& config, Backend& backend,
                             const EngineOptions& options)
    : config_(config), backend_(backend), options_(options) {}

TransformerVq::~TransformerVq() = default;

absl::StatusOr<std::unique_ptr<TransformerVq>> TransformerVq::Create(
    const ModelWeights& weights, Backend& backend,
    const EngineOptions& options) {
  const ModelConfig& config = weights.config();
  if (options.block_len < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "block_len must be >= 0 (0 = the model's), got %d", options.block_len));
  }
  if (options.weights_dtype != DType::kF32 &&
      options.weights_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrFormat("weights dtype must be F32 or BF16, got %s",
                        DTypeName(options.weights_dtype)));
  }
  if (options.max_prefill_chunk < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_prefill_chunk must be >= 1, got %d", options.max_prefill_chunk));
  }
  std::unique_ptr<TransformerVq> model(
      new TransformerVq(config, backend, options));
  if (model->options_.block_len == 0) {
    model->options_.block_len = config.block_len;
  }
  model->shape_ = AttentionShape{config.n_head, config.n_code, config.mem_len,
                                 config.d_k, config.d_v, config.agg_cache};
  model->workspace_ = std::make_unique<Workspace>();
  if (config.format_version == 2) {
    TVQ_RETURN_IF_ERROR(model->LoadStacked(weights));
    return model;
  }

  // Each weight travels as a view carrying its dtype and shape. Matrices
  // (`matrix`) are rounded to BF16 first when options.weights_dtype asks.
  auto upload = [&](std::string_view name,
                    bool matrix = false) -> absl::StatusOr<TensorView> {
    TensorView host = weights.View(name);
    if (host.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model: tensor \"%s\" is missing", name));
    }
    if (matrix && options.weights_dtype == DType::kBF16 &&
        host.dtype == DType::kF32) {
      std::vector<uint16_t>& rounded = model->bf16_weights_.emplace_back(
          static_cast<size_t>(host.elements()));
      F32ToBF16Array(host.elements(), host.as<float>(),
                              rounded.data());
      host = TensorView::Of(
          rounded.data(), DType::kBF16,
          std::span<const int64_t>(host.dims.data(), host.rank));
    }
    DeviceBuffer storage;
    TVQ_ASSIGN_OR_RETURN(const TensorView view,
                         backend.UploadWeights(host, &storage));
    model->weight_storage_.push_back(std::move(storage));
    return view;
  };
  // Derived tables (F32, computed here): the pointer the kernels read.
  auto upload_owned =
      [&](const std::vector<float>& host) -> absl::StatusOr<const float*> {
    TVQ_ASSIGN_OR_RETURN(
        const TensorView view,
        backend.UploadWeights(
            F32(host.data(), {static_cast<int64_t>(host.size())}),
            &model->weight_storage_.emplace_back()));
    return view.as<float>();
  };

  TVQ_ASSIGN_OR_RETURN(model->embeddings_, upload("token_embedder/embs", /*matrix=*/true));
  if (config.e_tie) {
    TVQ_ASSIGN_OR_RETURN(model->output_bias_, upload("token_embedder/bias_out"));
  } else {
    TVQ_ASSIGN_OR_RETURN(model->output_kernel_, upload("out_proj/kernel", /*matrix=*/true));
    TVQ_ASSIGN_OR_RETURN(model->output_bias_, upload("out_proj/bias"));
  }
  if (config.e_preln) {
    TVQ_ASSIGN_OR_RETURN(model->out_ln_gain_, upload("out_ln/g"));
    TVQ_ASSIGN_OR_RETURN(model->out_ln_bias_, upload("out_ln/b"));
  }
  if (config.pe_abs) {
    std::span<const float> scale = weights.Tensor("position_embedder/scale");
    if (scale.size() != 1) {
      return absl::InvalidArgumentError(
          "model: tensor \"position_embedder/scale\" is missing");
    }
    model->position_scale_ = scale[0];
  }

  const int D = config.d_model, H = config.n_head, S = config.n_code,
            M = config.mem_len, dk = config.d_k;
  const double key_scale = std::pow(static_cast<double>(dk), -0.25);
  model->sublayers_.resize(config.num_sublayers());
  for (int index = 0; index < config.num_sublayers(); ++index) {
    Sublayer& sublayer = model->sublayers_[index];
    const std::string prefix = SublayerPrefix(index);
    TVQ_ASSIGN_OR_RETURN(sublayer.input_ln_gain, upload(prefix + "input_ln/g"));
    TVQ_ASSIGN_OR_RETURN(sublayer.input_ln_bias, upload(prefix + "input_ln/b"));
    TVQ_ASSIGN_OR_RETURN(sublayer.q_kernel, upload(prefix + "q_proj/kernel", true));
    TVQ_ASSIGN_OR_RETURN(sublayer.kvg_kernel, upload(prefix + "kvg_proj/kernel", true));
    TVQ_ASSIGN_OR_RETURN(sublayer.res_kernel, upload(prefix + "res_proj/kernel", true));

    DeriveCodebook(weights.Tensor(prefix + "quantizer/c_sum"),
                   weights.Tensor(prefix + "quantizer/c_count"), H, S, dk,
                   &sublayer.codebook, &sublayer.codebook_sq_norm);
    // r_d = (Sin(d) Wr) d_k^-1/4, d = 0..M.
    DeriveRelativeTable(weights.Tensor(prefix + "r_proj/kernel"), H, M, D, dk,
                        config.pe_lam, key_scale, &sublayer.relative);
    std::span<const float> u = weights.Tensor(prefix + "u");
    std::span<const float> v = weights.Tensor(prefix + "v");
    sublayer.u.resize(static_cast<size_t>(H) * dk);
    sublayer.v.resize(static_cast<size_t>(H) * dk);
    for (int j = 0; j < H * dk; ++j) {
      sublayer.u[j] = static_cast<float>(u[j] * key_scale);
      sublayer.v[j] = static_cast<float>(v[j] * key_scale);
    }
    TVQ_ASSIGN_OR_RETURN(sublayer.tables.codebook, upload_owned(sublayer.codebook));
    TVQ_ASSIGN_OR_RETURN(sublayer.tables.codebook_sq_norm,
                         upload_owned(sublayer.codebook_sq_norm));
    TVQ_ASSIGN_OR_RETURN(sublayer.tables.relative, upload_owned(sublayer.relative));
    TVQ_ASSIGN_OR_RETURN(sublayer.tables.u, upload_owned(sublayer.u));
    TVQ_ASSIGN_OR_RETURN(sublayer.tables.v, upload_owned(sublayer.v));
    sublayer.tables.dtype = DType::kF32;
  }
  return model;
}

absl::Status TransformerVq::Prefill(StatePool& pool, int slot,
                                    std::span<const int32_t> tokens,
                                    LogprobRows rows,
                                    std::vector<float>* logprobs,
                                    CodeTrace* codes) {
  if (slot < 0 || slot >= pool.num_slots()) {
    return absl::OutOfRangeError(absl::StrFormat(
        "prefill: slot %d outside [0, %d)", slot, pool.num_slots()));
  }
  if (rows != LogprobRows::kNone && logprobs == nullptr) {
    return absl::InvalidArgumentError("prefill: logprobs output is null");
  }
  if (tokens.empty()) {
    if (rows == LogprobRows::kNone) return absl::OkStatus();
    return absl::InvalidArgumentError(
        "prefill: no tokens, so there is no next-token distribution");
  }
  TVQ_RETURN_IF_ERROR(CheckTokens(tokens, config_.n_vocab));
  if (logprobs != nullptr) logprobs->clear();
  if (codes != nullptr) codes->assign(config_.num_sublayers(), {});
  const int slots[1] = {slot};
  for (size_t begin = 0; begin < tokens.size();
       begin += options_.max_prefill_chunk) {
    const size_t count =
        std::min<size_t>(options_.max_prefill_chunk, tokens.size() - begin);
    const bool last_chunk = begin + count == tokens.size();
    LogprobRows chunk_rows = rows;
    if (rows == LogprobRows::kLast && !last_chunk) chunk_rows = LogprobRows::kNone;
    CodeTrace chunk_codes;
    if (config_.format_version == 2) {
      TVQ_RETURN_IF_ERROR(ForwardStacked(
          pool, slots, tokens.subspan(begin, count), slot, chunk_rows, logprobs,
          codes != nullptr ? &chunk_codes : nullptr));
    } else {
      TVQ_RETURN_IF_ERROR(Forward(pool, slots, tokens.subspan(begin, count),
                                  slot, chunk_rows, logprobs,
                                  codes != nullptr ? &chunk_codes : nullptr));
    }
    if (codes != nullptr) {
      // Per head, chunks concatenate along the token axis.
      for (int sublayer = 0; sublayer < config_.num_sublayers(); ++sublayer) {
        std::vector<int32_t>& merged = (*codes)[sublayer];
        std::vector<int32_t> next(merged.size() + chunk_codes[sublayer].size());
        const size_t before = merged.size() / config_.n_head;
        for (int h = 0; h < config_.n_head; ++h) {
          std::copy_n(merged.begin() + h * before, before,
                      next.begin() + h * (before + count));
          std::copy_n(chunk_codes[sublayer].begin() + h * count, count,
                      next.begin() + h * (before + count) + before);
        }
        merged = std::move(next);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status TransformerVq::DecodeStep(StatePool& pool,
                                       std::span<const int> slots,
                                       std::span<const int32_t> tokens,
                                       std::vector<float>* logprobs,
                                       CodeTrace* codes) {
  if (slots.size() != tokens.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "decode: %d slots but %d tokens", slots.size(), tokens.size()));
  }
  if (logprobs == nullptr) {
    return absl::InvalidArgumentError("decode: logprobs output is null");
  }
  if (slots.empty()) {
    logprobs->clear();
    return absl::OkStatus();
  }
  std::unordered_set<int> seen;
  for (int slot : slots) {
    if (slot < 0 || slot >= pool.num_slots()) {
      return absl::OutOfRangeError(absl::StrFormat(
          "decode: slot %d outside [0, %d)", slot, pool.num_slots()));
    }
    if (!seen.insert(slot).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("decode: slot %d appears twice in one batch", slot));
    }
  }
  TVQ_RETURN_IF_ERROR(CheckTokens(tokens, config_.n_vocab));
  logprobs->clear();
  if (config_.format_version == 2) {
    return ForwardStacked(pool, slots, tokens, /*prefill_slot=*/-1,
                          LogprobRows::kAll, logprobs, codes);
  }
  return Forward(pool, slots, tokens, /*prefill_slot=*/-1, LogprobRows::kAll,
                 logprobs, codes);
}

absl::Status TransformerVq::Forward(StatePool& pool, std::span<const int> slots,
                                    std::span<const int32_t> tokens,
                                    int prefill_slot, LogprobRows rows,
                                    std::vector<float>* logprobs,
                                    CodeTrace* codes) {
  const int n = static_cast<int>(tokens.size());
  const int D = config_.d_model, H = config_.n_head, dk = config_.d_k,
            dv = config_.d_v, V = config_.n_vocab;
  const int q_stride = H * dk;
  const int kvg_stride = H * (dk + 2 * dv);
  const int attention_stride = H * dv;
  const bool prefill = prefill_slot >= 0;
  Workspace& work = *workspace_;

  if (work.capacity < n) {
    const size_t rows_needed = static_cast<size_t>(n);
    TVQ_ASSIGN_OR_RETURN(work.x, backend_.Allocate(sizeof(float) * rows_needed * D));
    TVQ_ASSIGN_OR_RETURN(work.normed, backend_.Allocate(sizeof(float) * rows_needed * D));
    TVQ_ASSIGN_OR_RETURN(work.q, backend_.Allocate(sizeof(float) * rows_needed * q_stride));
    TVQ_ASSIGN_OR_RETURN(work.kvg, backend_.Allocate(sizeof(float) * rows_needed * kvg_stride));
    TVQ_ASSIGN_OR_RETURN(work.attention,
                         backend_.Allocate(sizeof(float) * rows_needed * attention_stride));
    TVQ_ASSIGN_OR_RETURN(work.logits, backend_.Allocate(sizeof(float) * rows_needed * V));
    TVQ_ASSIGN_OR_RETURN(work.codes, backend_.Allocate(sizeof(int32_t) * rows_needed * H));
    work.capacity = n;
  }
  float* x = work.x.as<float>();
  float* normed = work.normed.as<float>();
  float* q = work.q.as<float>();
  float* kvg = work.kvg.as<float>();
  float* attention = work.attention.as<float>();
  int32_t* step_codes = work.codes.as<int32_t>();

  std::vector<int64_t> positions;
  TVQ_RETURN_IF_ERROR(
      EmbedRows(pool, slots, tokens, prefill_slot, &positions, x));
  const int64_t first_position = prefill ? pool.position(prefill_slot) : 0;
  if (codes != nullptr) codes->assign(config_.num_sublayers(), {});

  const float key_scale = static_cast<float>(std::pow(static_cast<double>(dk), -0.25));
  const int block_len = options_.block_len;
  for (int index = 0; index < config_.num_sublayers(); ++index) {
    const Sublayer& sublayer = sublayers_[index];
    const SublayerState state = pool.Sublayer(index);
    // x~ = RMS(x) g + b; q = RMS_head(x~ Wq) dk^-1/4; [k | v | g] = x~ Wkvg.
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
    float* values = kvg + H * dk;
    float* gates = values + H * dv;
    TVQ_RETURN_IF_ERROR(backend_.Silu(n, 2 * H * dv, values, kvg_stride));
    TVQ_RETURN_IF_ERROR(backend_.VqAssign(n, shape_, sublayer.tables, kvg,
                                          kvg_stride, step_codes));

    if (prefill) {
      for (int begin = 0; begin < n; begin += block_len) {
        const int count = std::min(block_len, n - begin);
        TVQ_RETURN_IF_ERROR(backend_.BlockAttention(
            shape_, sublayer.tables, state, prefill_slot, first_position + begin,
            count, q + static_cast<int64_t>(begin) * q_stride, q_stride,
            step_codes + static_cast<int64_t>(begin) * H,
            values + static_cast<int64_t>(begin) * kvg_stride, kvg_stride,
            attention + static_cast<int64_t>(begin) * attention_stride));
        TVQ_RETURN_IF_ERROR(backend_.UpdateState(
            shape_, state, prefill_slot, first_position + begin, count,
            step_codes + static_cast<int64_t>(begin) * H,
            values + static_cast<int64_t>(begin) * kvg_stride, kvg_stride));
      }
    } else {
      TVQ_RETURN_IF_ERROR(backend_.DecodeAttention(
          shape_, sublayer.tables, state, slots.data(), positions.data(), n, q,
          q_stride, step_codes, values, kvg_stride, attention));
      TVQ_RETURN_IF_ERROR(backend_.UpdateStateBatch(
          shape_, state, slots.data(), positions.data(), n, step_codes, values,
          kvg_stride));
    }
    if (codes != nullptr) {
      work.host_codes.resize(static_cast<size_t>(n) * H);
      TVQ_RETURN_IF_ERROR(backend_.CopyToHost(work.host_codes.data(), step_codes,
                                              sizeof(int32_t) * n * H));
      std::vector<int32_t>& trace = (*codes)[index];
      trace.resize(static_cast<size_t>(n) * H);
      for (int i = 0; i < n; ++i) {
        for (int h = 0; h < H; ++h) trace[h * n + i] = work.host_codes[i * H + h];
      }
    }
    // x += (o * g) Wres.
    TVQ_RETURN_IF_ERROR(backend_.Multiply(n, attention_stride, attention,
                                          attention_stride, gates, kvg_stride));
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(attention, {n, attention_stride}),
                                       .b = sublayer.res_kernel,
                                       .beta = 1,
                                       .c = F32(x, {n, D}),
                                       .batch_invariant = !prefill}));
  }

  AdvancePositions(pool, slots, positions, prefill_slot);
  return HeadLogprobs(x, n, rows, prefill, logprobs);
}

absl::Status TransformerVq::EmbedRows(const StatePool& pool,
                                      std::span<const int> slots,
                                      std::span<const int32_t> tokens,
                                      int prefill_slot,
                                      std::vector<int64_t>* positions,
                                      float* x) {
  const int n = static_cast<int>(tokens.size());
  const bool prefill = prefill_slot >= 0;
  const int64_t first_position = prefill ? pool.position(prefill_slot) : 0;
  positions->resize(n);
  for (int i = 0; i < n; ++i) {
    (*positions)[i] = prefill ? first_position + i : pool.position(slots[i]);
  }
  return backend_.Embed(embeddings_, tokens.data(), positions->data(), n,
                        config_.pe_abs, position_scale_, config_.pe_lam, x);
}

void TransformerVq::AdvancePositions(StatePool& pool,
                                     std::span<const int> slots,
                                     std::span<const int64_t> positions,
                                     int prefill_slot) {
  if (positions.empty()) return;
  if (prefill_slot >= 0) {
    pool.set_position(prefill_slot,
                      positions.front() + static_cast<int64_t>(positions.size()));
    return;
  }
  for (size_t i = 0; i < positions.size(); ++i) {
    pool.set_position(slots[i], positions[i] + 1);
  }
}

absl::Status TransformerVq::HeadLogprobs(const float* x, int n,
                                         LogprobRows rows, bool prefill,
                                         std::vector<float>* logprobs) {
  if (rows == LogprobRows::kNone) return absl::OkStatus();
  const int D = config_.d_model, V = config_.n_vocab;
  Workspace& work = *workspace_;
  const int first_row = rows == LogprobRows::kLast ? n - 1 : 0;
  const int row_count = n - first_row;
  const float* hidden = x + static_cast<int64_t>(first_row) * D;
  if (config_.e_preln) {
    float* normed = work.normed.as<float>();
    TVQ_RETURN_IF_ERROR(backend_.RmsNorm(row_count, D, hidden, D, out_ln_gain_,
                                         out_ln_bias_, normed, D));
    hidden = normed;
  }
  float* logits = work.logits.as<float>();
  if (config_.e_tie) {
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.transpose_b = true,
                                       .a = F32(hidden, {row_count, D}),
                                       .b = embeddings_,
                                       .c = F32(logits, {row_count, V}),
                                       .batch_invariant = !prefill}));
  } else {
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(hidden, {row_count, D}),
                                       .b = output_kernel_,
                                       .c = F32(logits, {row_count, V}),
                                       .batch_invariant = !prefill}));
  }
  TVQ_RETURN_IF_ERROR(backend_.LogSoftmax(row_count, V, output_bias_,
                                          static_cast<float>(config_.e_scale),
                                          logits));
  const size_t offset = logprobs->size();
  logprobs->resize(offset + static_cast<size_t>(row_count) * V);
  return backend_.CopyToHost(logprobs->data() + offset, logits,
                             sizeof(float) * row_count * V);
}

}  // namespace tvq::runtime
