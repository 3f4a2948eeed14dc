// The optimized-branch family (format_version 2, docs/model-format.md):
// loading its stacked weights and its forward pass, written once against
// Backend. Attention sublayers use the same attention, VQ and state ops as
// format_version 1 (M = L, aggregated cache on), once per query group; MLP
// sublayers are RMS norm, Dense, squared ReLU, Dense.
#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"
#include "server/engine/transformer_vq.h"
#include "server/engine/transformer_vq_internal.h"

namespace tvq::runtime {

namespace {

// Query head i uses key/value head i / G with G = n_query_head / n_head.
// The official head types have n_head = 1 (shga, mqa) or G = 1 (mha), so
// query group g (the heads g, G + g, ... that read key/value heads 0, 1,
// ...) is one contiguous block of n_head query heads starting at head
// g * n_head: the attention ops run once per group with H = n_head.
int QueryGroups(const ModelConfig& config) {
  return config.n_query_head / config.n_head;
}

}  // namespace

absl::Status TransformerVq::LoadStacked(const ModelWeights& weights) {
  const ModelConfig& config = weights.config();
  const int D = config.d_model, n_kv = config.n_head,
            n_q = config.n_query_head, S = config.n_code, M = config.mem_len,
            dk = config.d_k, dv = config.d_v, L = config.n_layer;
  const int groups = QueryGroups(config);
  if (n_q % n_kv != 0 || (n_kv != 1 && groups != 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "model: %d query heads over %d key/value heads is not a supported "
        "grouping (n_head must be 1 or equal the query heads)",
        n_q, n_kv));
  }
  auto upload_view = [&](const TensorView& host) -> absl::StatusOr<TensorView> {
    DeviceBuffer storage;
    TVQ_ASSIGN_OR_RETURN(const TensorView view,
                         backend_.UploadWeights(host, &storage));
    weight_storage_.push_back(std::move(storage));
    return view;
  };
  auto whole = [&](std::string_view name) -> absl::StatusOr<TensorView> {
    const TensorView host = weights.View(name);
    if (host.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model: tensor \"%s\" is missing", name));
    }
    return upload_view(host);
  };
  // Layer `layer` of a tensor stacked [n_layer, 1, rows, cols].
  auto layer_slice = [&](const std::string& name, int layer, int64_t rows,
                         int64_t cols) -> absl::StatusOr<TensorView> {
    const TensorView host = weights.View(name);
    if (host.empty() || host.elements() != int64_t{L} * rows * cols) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "model: tensor \"%s\" is missing or misshapen", name));
    }
    const size_t offset = static_cast<size_t>(layer) * rows * cols *
                          DTypeSize(host.dtype);
    const int64_t shape[2] = {rows, cols};
    return upload_view(TensorView::Of(
        static_cast<const char*>(host.data) + offset, host.dtype, shape));
  };
  // Float32 values of layer `layer` of a stacked tensor.
  auto layer_values = [&](const std::string& name,
                          int layer) -> absl::StatusOr<std::span<const float>> {
    std::span<const float> all = weights.Tensor(name);
    if (all.empty() || all.size() % L != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "model: tensor \"%s\" is missing or misshapen", name));
    }
    const size_t per_layer = all.size() / L;
    return all.subspan(static_cast<size_t>(layer) * per_layer, per_layer);
  };
  auto upload_owned =
      [&](const std::vector<float>& host) -> absl::StatusOr<const float*> {
    TVQ_ASSIGN_OR_RETURN(
        const TensorView view,
        upload_view(F32(host.data(), {static_cast<int64_t>(host.size())})));
    return view.as<float>();
  };

  TVQ_ASSIGN_OR_RETURN(embeddings_, whole("token_embed/embedding"));
  if (!config.e_tie) {
    TVQ_ASSIGN_OR_RETURN(output_kernel_, whole("out_proj/kernel"));
    // logits = (e_scale x) W + b is computed as (x W + b / e_scale) e_scale
    // by LogSoftmax (the batch-invariant GEMM of decode has alpha = 1);
    // e_scale != 0 is checked with the config.
    std::span<const float> bias = weights.Tensor("out_proj/bias");
    if (bias.size() != static_cast<size_t>(config.n_vocab)) {
      return absl::InvalidArgumentError(
          "model: tensor \"out_proj/bias\" is missing");
    }
    scaled_output_bias_.resize(bias.size());
    for (size_t i = 0; i < bias.size(); ++i) {
      scaled_output_bias_[i] =
          static_cast<float>(static_cast<double>(bias[i]) / config.e_scale);
    }
    TVQ_ASSIGN_OR_RETURN(const float* scaled_bias,
                         upload_owned(scaled_output_bias_));
    output_bias_ = F32(scaled_bias, {config.n_vocab});
  }
  if (config.pe_abs) {
    std::span<const float> scale = weights.Tensor("pos_embed/scale");
    if (scale.size() != 1) {
      return absl::InvalidArgumentError(
          "model: tensor \"pos_embed/scale\" is missing");
    }
    position_scale_ = scale[0];
  }

  const double key_scale = std::pow(static_cast<double>(dk), -0.25);
  stacked_attention_.resize(config.num_sublayers());
  for (int index = 0; index < config.num_sublayers(); ++index) {
    StackedAttention& attention = stacked_attention_[index];
    const int layer = index / config.attention_per_layer();
    const std::string prefix =
        StackedAttentionPrefix(index % config.attention_per_layer());
    const std::string qkvg = prefix + "qkvg_producer/";
    TVQ_ASSIGN_OR_RETURN(attention.q_kernel,
                         layer_slice(qkvg + "q_proj/kernel", layer, D, n_q * dk));
    TVQ_ASSIGN_OR_RETURN(attention.k_kernel,
                         layer_slice(qkvg + "k_proj/kernel", layer, D, n_kv * dk));
    TVQ_ASSIGN_OR_RETURN(attention.v_kernel,
                         layer_slice(qkvg + "v_proj/kernel", layer, D, n_kv * dv));
    if (config.head_type == HeadType::kShga) {
      TVQ_ASSIGN_OR_RETURN(attention.g_kernel,
                           layer_slice(qkvg + "g_proj/kernel", layer, D, dv));
    }
    TVQ_ASSIGN_OR_RETURN(
        attention.res_kernel,
        layer_slice(prefix + "res_proj/kernel", layer, int64_t{n_q} * dv, D));

    // Codebook c = c_sum / max(c_count, 0.01) and |c|^2, [n_kv, S, dk].
    TVQ_ASSIGN_OR_RETURN(std::span<const float> c_sum,
                         layer_values(prefix + "quantizer/c_sum", layer));
    TVQ_ASSIGN_OR_RETURN(std::span<const float> c_count,
                         layer_values(prefix + "quantizer/c_count", layer));
    DeriveCodebook(c_sum, c_count, n_kv, S, dk, &attention.codebook,
                   &attention.codebook_sq_norm);
    // r_d = (Sin(d) Wr) d_k^-1/4, d = 0..M, [n_kv, M + 1, dk].
    const std::string xl = prefix + "xl_bias_producer/";
    TVQ_ASSIGN_OR_RETURN(std::span<const float> r_kernel,
                         layer_values(xl + "xl_r_proj/kernel", layer));
    DeriveRelativeTable(r_kernel, n_kv, M, D, dk, config.pe_lam, key_scale,
                        &attention.relative);
    TVQ_ASSIGN_OR_RETURN(std::span<const float> xl_u,
                         layer_values(xl + "xl_u", layer));
    TVQ_ASSIGN_OR_RETURN(std::span<const float> xl_v,
                         layer_values(xl + "xl_v", layer));
    TVQ_ASSIGN_OR_RETURN(const float* codebook, upload_owned(attention.codebook));
    TVQ_ASSIGN_OR_RETURN(const float* sq_norm,
                         upload_owned(attention.codebook_sq_norm));
    TVQ_ASSIGN_OR_RETURN(const float* relative, upload_owned(attention.relative));
    attention.u.resize(groups);
    attention.v.resize(groups);
    attention.group_tables.resize(groups);
    for (int g = 0; g < groups; ++g) {
      // Query heads g * n_kv .. g * n_kv + n_kv - 1 (see QueryGroups).
      const size_t first = static_cast<size_t>(g) * n_kv * dk;
      attention.u[g].resize(static_cast<size_t>(n_kv) * dk);
      attention.v[g].resize(static_cast<size_t>(n_kv) * dk);
      for (int j = 0; j < n_kv * dk; ++j) {
        attention.u[g][j] = static_cast<float>(xl_u[first + j] * key_scale);
        attention.v[g][j] = static_cast<float>(xl_v[first + j] * key_scale);
      }
      AttentionTables& tables = attention.group_tables[g];
      tables.codebook = codebook;
      tables.codebook_sq_norm = sq_norm;
      tables.relative = relative;
      TVQ_ASSIGN_OR_RETURN(tables.u, upload_owned(attention.u[g]));
      TVQ_ASSIGN_OR_RETURN(tables.v, upload_owned(attention.v[g]));
      tables.dtype = DType::kF32;
    }
  }
  if (config.d_ff > 0) {
    stacked_mlp_.resize(L);
    const std::string prefix(kStackedMlpPrefix);
    for (int layer = 0; layer < L; ++layer) {
      TVQ_ASSIGN_OR_RETURN(
          stacked_mlp_[layer].up_kernel,
          layer_slice(prefix + "Dense_0/kernel", layer, D, config.d_ff));
      TVQ_ASSIGN_OR_RETURN(
          stacked_mlp_[layer].down_kernel,
          layer_slice(prefix + "Dense_1/kernel", layer, config.d_ff, D));
    }
  }
  return absl::OkStatus();
}

// x += A(x) for attention sublayer `index` (execution order); x~ = RMS(x)
// (no gain), q = RMS_head(x~ Wq) dk^-1/4, k likewise, v = x~ Wv (silu for
// shga), gates silu(x~ Wg) (shga), per query group: attention against the
// state, then the residual projection of the group's rows of res_proj.
absl::Status TransformerVq::StackedAttentionSublayer(
    int index, StatePool& pool, std::span<const int> slots,
    std::span<const int64_t> positions, int prefill_slot, int n,
    CodeTrace* codes) {
  const StackedAttention& sublayer = stacked_attention_[index];
  const SublayerState state = pool.Sublayer(index);
  Workspace& work = *workspace_;
  const int D = config_.d_model, n_kv = config_.n_head,
            n_q = config_.n_query_head, dk = config_.d_k, dv = config_.d_v;
  const bool shga = config_.head_type == HeadType::kShga;
  const bool prefill = prefill_slot >= 0;
  const int groups = QueryGroups(config_);
  const int q_stride = n_q * dk;
  const int value_offset = n_kv * dk;
  const int kvg_stride = n_kv * dk + n_kv * dv + (shga ? dv : 0);
  const int group_width = n_kv * dv;
  float* x = work.x.as<float>();
  float* normed = work.normed.as<float>();
  float* q = work.q.as<float>();
  float* kvg = work.kvg.as<float>();
  float* attention = work.attention.as<float>();
  int32_t* step_codes = work.codes.as<int32_t>();
  float* values = kvg + value_offset;
  float* gates = values + n_kv * dv;

  TVQ_RETURN_IF_ERROR(backend_.RmsNorm(n, D, x, D, TensorView{}, TensorView{},
                                       normed, D));
  const TensorView normed_view = F32(normed, {n, D});
  TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = normed_view,
                                     .b = sublayer.q_kernel,
                                     .c = F32(q, {n, q_stride}),
                                     .batch_invariant = !prefill}));
  TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = normed_view,
                                     .b = sublayer.k_kernel,
                                     .c = F32(kvg, {n, n_kv * dk}, kvg_stride),
                                     .batch_invariant = !prefill}));
  TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = normed_view,
                                     .b = sublayer.v_kernel,
                                     .c = F32(values, {n, n_kv * dv}, kvg_stride),
                                     .batch_invariant = !prefill}));
  if (shga) {
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = normed_view,
                                       .b = sublayer.g_kernel,
                                       .c = F32(gates, {n, dv}, kvg_stride),
                                       .batch_invariant = !prefill}));
  }
  TVQ_RETURN_IF_ERROR(backend_.HeadRmsNorm(
      n, n_q, dk, q, q_stride, static_cast<float>(std::pow(dk, -0.25))));
  TVQ_RETURN_IF_ERROR(backend_.HeadRmsNorm(
      n, n_kv, dk, kvg, kvg_stride, static_cast<float>(std::pow(dk, -0.25))));
  if (shga) {
    // silu on the values and the gates (adjacent columns).
    TVQ_RETURN_IF_ERROR(backend_.Silu(n, n_kv * dv + dv, values, kvg_stride));
  }
  TVQ_RETURN_IF_ERROR(backend_.VqAssign(n, shape_, sublayer.group_tables[0],
                                        kvg, kvg_stride, step_codes));

  // Group g's output: rows [n] of group_width at attention + g * n * width.
  auto group_out = [&](int g) {
    return attention + static_cast<int64_t>(g) * n * group_width;
  };
  if (prefill) {
    const int block_len = options_.block_len;
    const int64_t first_position = positions[0];
    for (int begin = 0; begin < n; begin += block_len) {
      const int count = std::min(block_len, n - begin);
      for (int g = 0; g < groups; ++g) {
        TVQ_RETURN_IF_ERROR(backend_.BlockAttention(
            shape_, sublayer.group_tables[g], state, prefill_slot,
            first_position + begin, count,
            q + static_cast<int64_t>(begin) * q_stride + g * n_kv * dk,
            q_stride, step_codes + static_cast<int64_t>(begin) * n_kv,
            values + static_cast<int64_t>(begin) * kvg_stride, kvg_stride,
            group_out(g) + static_cast<int64_t>(begin) * group_width));
      }
      TVQ_RETURN_IF_ERROR(backend_.UpdateState(
          shape_, state, prefill_slot, first_position + begin, count,
          step_codes + static_cast<int64_t>(begin) * n_kv,
          values + static_cast<int64_t>(begin) * kvg_stride, kvg_stride));
    }
  } else {
    for (int g = 0; g < groups; ++g) {
      TVQ_RETURN_IF_ERROR(backend_.DecodeAttention(
          shape_, sublayer.group_tables[g], state, slots.data(),
          positions.data(), n, q + g * n_kv * dk, q_stride, step_codes, values,
          kvg_stride, group_out(g)));
    }
    TVQ_RETURN_IF_ERROR(backend_.UpdateStateBatch(
        shape_, state, slots.data(), positions.data(), n, step_codes, values,
        kvg_stride));
  }
  if (codes != nullptr) {
    work.host_codes.resize(static_cast<size_t>(n) * n_kv);
    TVQ_RETURN_IF_ERROR(backend_.CopyToHost(work.host_codes.data(), step_codes,
                                            sizeof(int32_t) * n * n_kv));
    std::vector<int32_t>& trace = (*codes)[index];
    trace.resize(static_cast<size_t>(n) * n_kv);
    for (int i = 0; i < n; ++i) {
      for (int h = 0; h < n_kv; ++h) {
        trace[h * n + i] = work.host_codes[i * n_kv + h];
      }
    }
  }
  const size_t res_row_bytes = static_cast<size_t>(D) *
                               DTypeSize(sublayer.res_kernel.dtype);
  for (int g = 0; g < groups; ++g) {
    if (shga) {
      TVQ_RETURN_IF_ERROR(backend_.Multiply(n, group_width, group_out(g),
                                            group_width, gates, kvg_stride));
    }
    // x += o_g Wres[rows of group g].
    const int64_t res_shape[2] = {group_width, D};
    const TensorView res_rows = TensorView::Of(
        static_cast<const char*>(sublayer.res_kernel.data) +
            static_cast<size_t>(g) * group_width * res_row_bytes,
        sublayer.res_kernel.dtype, res_shape);
    TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(group_out(g), {n, group_width}),
                                       .b = res_rows,
                                       .beta = 1,
                                       .c = F32(x, {n, D}),
                                       .batch_invariant = !prefill}));
  }
  return absl::OkStatus();
}

// x += relu(RMS(x) W0)^2 W1.
absl::Status TransformerVq::StackedMlpSublayer(int layer, int n, bool prefill) {
  const StackedMlp& mlp = stacked_mlp_[layer];
  Workspace& work = *workspace_;
  const int D = config_.d_model, d_ff = config_.d_ff;
  float* x = work.x.as<float>();
  float* normed = work.normed.as<float>();
  float* hidden = work.hidden.as<float>();
  TVQ_RETURN_IF_ERROR(backend_.RmsNorm(n, D, x, D, TensorView{}, TensorView{},
                                       normed, D));
  TVQ_RETURN_IF_ERROR(backend_.Gemm({.a = F32(normed, {n, D}),
                                     .b = mlp.up_kernel,
                                     .c = F32(hidden, {n, d_ff}),
                                     .batch_invariant = !prefill}));
  TVQ_RETURN_IF_ERROR(backend_.SquaredRelu(n, d_ff, hidden, d_ff));
  return backend_.Gemm({.a = F32(hidden, {n, d_ff}),
                        .b = mlp.down_kernel,
                        .beta = 1,
                        .c = F32(x, {n, D}),
                        .batch_invariant = !prefill});
}

absl::Status TransformerVq::ForwardStacked(StatePool& pool,
                                           std::span<const int> slots,
                                           std::span<const int32_t> tokens,
                                           int prefill_slot, LogprobRows rows,
                                           std::vector<float>* logprobs,
                                           CodeTrace* codes) {
  const int n = static_cast<int>(tokens.size());
  const int D = config_.d_model, n_kv = config_.n_head,
            n_q = config_.n_query_head, dk = config_.d_k, dv = config_.d_v,
            V = config_.n_vocab;
  const bool shga = config_.head_type == HeadType::kShga;
  const bool prefill = prefill_slot >= 0;
  Workspace& work = *workspace_;
  if (work.capacity < n) {
    const size_t r = static_cast<size_t>(n);
    const size_t kvg_width = static_cast<size_t>(n_kv) * (dk + dv) + (shga ? dv : 0);
    TVQ_ASSIGN_OR_RETURN(work.x, backend_.Allocate(sizeof(float) * r * D));
    TVQ_ASSIGN_OR_RETURN(work.normed, backend_.Allocate(sizeof(float) * r * D));
    TVQ_ASSIGN_OR_RETURN(work.q, backend_.Allocate(sizeof(float) * r * n_q * dk));
    TVQ_ASSIGN_OR_RETURN(work.kvg, backend_.Allocate(sizeof(float) * r * kvg_width));
    TVQ_ASSIGN_OR_RETURN(work.attention,
                         backend_.Allocate(sizeof(float) * r * n_q * dv));
    TVQ_ASSIGN_OR_RETURN(work.logits, backend_.Allocate(sizeof(float) * r * V));
    TVQ_ASSIGN_OR_RETURN(work.codes, backend_.Allocate(sizeof(int32_t) * r * n_kv));
    if (config_.d_ff > 0) {
      TVQ_ASSIGN_OR_RETURN(work.hidden,
                           backend_.Allocate(sizeof(float) * r * config_.d_ff));
    }
    work.capacity = n;
  }
  float* x = work.x.as<float>();

  std::vector<int64_t> positions;
  TVQ_RETURN_IF_ERROR(
      EmbedRows(pool, slots, tokens, prefill_slot, &positions, x));
  if (codes != nullptr) codes->assign(config_.num_sublayers(), {});
  for (int layer = 0; layer < config_.n_layer; ++layer) {
    for (int a = 0; a < config_.attention_per_layer(); ++a) {
      TVQ_RETURN_IF_ERROR(StackedAttentionSublayer(
          layer * config_.attention_per_layer() + a, pool, slots, positions,
          prefill_slot, n, codes));
    }
    if (config_.d_ff > 0) {
      TVQ_RETURN_IF_ERROR(StackedMlpSublayer(layer, n, prefill));
    }
  }
  AdvancePositions(pool, slots, positions, prefill_slot);
  // The head: this family has no out_ln weights (out_ln_gain_ and
  // out_ln_bias_ stay empty: with e_preln an RMS norm without gain), and
  // its bias is pre-divided by e_scale (scaled_output_bias_).
  return HeadLogprobs(x, n, rows, prefill, logprobs);
}

}  // namespace tvq::runtime
