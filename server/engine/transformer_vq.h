// The Transformer-VQ forward pass, written once against Backend.
#ifndef TVQ_SERVER_ENGINE_TRANSFORMER_VQ_H_
#define TVQ_SERVER_ENGINE_TRANSFORMER_VQ_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/backend/backend.h"
#include "server/model/model_config.h"
#include "server/model/model_weights.h"
#include "server/engine/state_pool.h"

namespace tvq::runtime {

struct EngineOptions {
  // Tokens per prefill block; 0 = the model's block_len.
  int block_len = 0;
  // Upper bound of tokens one Prefill call projects at once (memory bound).
  int max_prefill_chunk = 4096;
  // Dtype the weight matrices (projections, embedding table, output head)
  // are kept in for the backend: F32, or BF16 (rounded to nearest even at
  // load; the backend widens them and accumulates in float32). Norm gains,
  // biases and the derived attention tables (codebooks, relative table,
  // u', v') stay F32: VQ distances and scores are float32 (spec §5).
  DType weights_dtype = DType::kF32;
};

// Which logprob rows Prefill returns.
enum class LogprobRows { kNone, kLast, kAll };

// VQ codes chosen during a call, for tests: codes[sublayer][head * n + i]
// for the call's i-th token.
using CodeTrace = std::vector<std::vector<int32_t>>;

class TransformerVq {
 public:
  // `weights` must outlive the engine (the CPU backend reads them in place).
  static absl::StatusOr<std::unique_ptr<TransformerVq>> Create(
      const ModelWeights& weights, Backend& backend,
      const EngineOptions& options = {});
  ~TransformerVq();

  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return backend_; }

  // Feeds `tokens` into `slot` (continuing from its position) in blocks.
  // `logprobs` receives rows of n_vocab floats: none, the last token's
  // (next-token distribution) or one per token.
  absl::Status Prefill(StatePool& pool, int slot,
                       std::span<const int32_t> tokens, LogprobRows rows,
                       std::vector<float>* logprobs,
                       CodeTrace* codes = nullptr);

  // Feeds one token to each of `slots` (distinct) and writes their
  // next-token logprobs, [slots.size(), n_vocab], into `logprobs`.
  absl::Status DecodeStep(StatePool& pool, std::span<const int> slots,
                          std::span<const int32_t> tokens,
                          std::vector<float>* logprobs,
                          CodeTrace* codes = nullptr);

 private:
  struct Sublayer;
  struct StackedAttention;
  struct StackedMlp;
  struct Workspace;
  TransformerVq(const ModelConfig& config, Backend& backend,
                const EngineOptions& options);
  // format_version 2 (the optimized-branch family): its weights and its
  // forward pass; the attention and MLP sublayers are their own functions.
  absl::Status LoadStacked(const ModelWeights& weights);
  absl::Status ForwardStacked(StatePool& pool, std::span<const int> slots,
                              std::span<const int32_t> tokens, int prefill_slot,
                              LogprobRows rows, std::vector<float>* logprobs,
                              CodeTrace* codes);
  absl::Status StackedAttentionSublayer(int index, StatePool& pool,
                                        std::span<const int> slots,
                                        std::span<const int64_t> positions,
                                        int prefill_slot, int n,
                                        CodeTrace* codes);
  absl::Status StackedMlpSublayer(int layer, int n, bool prefill);
  absl::Status Forward(StatePool& pool, std::span<const int> slots,
                       std::span<const int32_t> tokens, int prefill_slot,
                       LogprobRows rows, std::vector<float>* logprobs,
                       CodeTrace* codes);
  // Shared by both families' forward passes. The positions of the step's
  // rows (prefill: the slot's next ones; decode: each slot's) and the rows'
  // embeddings, written to `x`.
  absl::Status EmbedRows(const StatePool& pool, std::span<const int> slots,
                         std::span<const int32_t> tokens, int prefill_slot,
                         std::vector<int64_t>* positions, float* x);
  // After the step: each slot's position past the rows it absorbed.
  static void AdvancePositions(StatePool& pool, std::span<const int> slots,
                               std::span<const int64_t> positions,
                               int prefill_slot);
  // The head over `rows` of the n rows of `x`: optional RMS norm (out_ln,
  // empty for format_version 2), logits (x W or x Eᵀ when tied), e_scale,
  // log-softmax (LogSoftmax applies e_scale as (x W + b / e_scale) e_scale);
  // appended to `logprobs`.
  absl::Status HeadLogprobs(const float* x, int n, LogprobRows rows,
                            bool prefill, std::vector<float>* logprobs);

  ModelConfig config_;
  Backend& backend_;
  EngineOptions options_;
  AttentionShape shape_;
  std::vector<Sublayer> sublayers_;
  std::vector<StackedAttention> stacked_attention_;  // format_version 2
  std::vector<StackedMlp> stacked_mlp_;              // format_version 2, d_ff > 0
  std::unique_ptr<Workspace> workspace_;
  // Head and embedding weights, readable by the backend.
  std::vector<DeviceBuffer> weight_storage_;
  // BF16 copies of the weight matrices (weights_dtype BF16): host memory
  // the backend reads in place or uploads from.
  std::vector<std::vector<uint16_t>> bf16_weights_;
  // Views carry each weight's dtype and shape to the backend.
  TensorView embeddings_;     // [V, D]
  TensorView output_kernel_;  // [D, V] (not e_tie)
  TensorView output_bias_;    // [V]
  TensorView out_ln_gain_;    // [D] (e_preln; empty otherwise)
  TensorView out_ln_bias_;    // [D] (e_preln; empty otherwise)
  float position_scale_ = 0;
  // format_version 2, not e_tie: out_proj/bias / e_scale (see ForwardStacked).
  std::vector<float> scaled_output_bias_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_ENGINE_TRANSFORMER_VQ_H_
