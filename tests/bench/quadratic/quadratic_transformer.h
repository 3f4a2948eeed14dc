// The quadratic baseline (issue 16): a standard softmax-attention
// transformer with a KV cache, of the same widths and the same sublayer
// structure as a Transformer-VQ model, on the same backend ops and GEMMs,
// so that a benchmark comparing the two isolates the attention algorithm.
//
// It takes the Transformer-VQ model's own weights: per sublayer the input
// RMS norm, q = RMS_head(x~ Wq) d_k^-1/4, [k | v | g] = x~ Wkvg with k
// head-normalized the same way and SiLU on v and g, x += (o * g) Wres; the
// embedding, the output head and log-softmax. Only the attention differs:
// o = softmax(q K^T) V over every earlier token of the sequence (causal; the
// scores need no further scale since q and k each carry d_k^-1/4), where
// Transformer-VQ attends over its window and codebook. Positions enter as
// the absolute sinusoid added to the embeddings (the VQ codebook, r_proj, u
// and v are unused). The KV cache keeps H (d_k + d_v) floats per token per
// sublayer (CacheBytesPerToken), so its memory grows with the context.
#ifndef TVQ_TESTS_BENCH_QUADRATIC_QUADRATIC_TRANSFORMER_H_
#define TVQ_TESTS_BENCH_QUADRATIC_QUADRATIC_TRANSFORMER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/backend/backend.h"
#include "server/model/model_weights.h"
#include "tests/bench/quadratic/softmax_attention.h"

namespace tvq::bench {

struct QuadraticOptions {
  int num_slots = 1;
  // Tokens each slot's cache holds (its prompt plus everything decoded).
  int64_t max_context = 4096;
  // Prompts are run through the layers in chunks of this many tokens.
  int max_prefill_chunk = 4096;
  // Queries whose scores are materialized at once in prefill.
  int query_block = 256;
  // Host threads of the softmax (the CPU backend has its own for the rest).
  int threads = 1;
};

class QuadraticTransformer {
 public:
  static absl::StatusOr<std::unique_ptr<QuadraticTransformer>> Create(
      const runtime::ModelWeights& weights, runtime::Backend& backend,
      const QuadraticOptions& options);
  ~QuadraticTransformer();

  // KV-cache bytes one token of context occupies (every sublayer).
  static size_t CacheBytesPerToken(const runtime::ModelConfig& config);

  const runtime::ModelConfig& config() const { return config_; }
  int num_slots() const { return static_cast<int>(caches_.size()); }
  int64_t position(int slot) const { return positions_.at(slot); }

  // Empties the slot's cache.
  absl::Status Reset(int slot);

  // Runs `tokens` after the slot's context; with `last_logprobs` writes the
  // log-probabilities [n_vocab] after the last token.
  absl::Status Prefill(int slot, std::span<const int32_t> tokens,
                       bool last_logprobs, std::vector<float>* logprobs);

  // One token per slot (distinct slots); logprobs [batch, n_vocab].
  absl::Status DecodeStep(std::span<const int> slots,
                          std::span<const int32_t> tokens,
                          std::vector<float>* logprobs);

  // Sets the slot's context to `length` tokens of random keys (shaped like
  // head-normalized keys) and values without running the model: decode time
  // does not depend on the cached numbers, and a 64k prefill would take
  // minutes. Copies nothing else.
  absl::Status SynthesizeContext(int slot, int64_t length, uint32_t seed);

  // Forgets every token of the slot after the first `length` (benchmarks
  // rewind so that each decode step sees the same context).
  absl::Status Truncate(int slot, int64_t length);

  // Copies slot `from`'s cache and position into slot `to`.
  absl::Status CopySlot(int from, int to);

 private:
  struct Sublayer;
  QuadraticTransformer(const runtime::ModelConfig& config,
                       runtime::Backend& backend,
                       const QuadraticOptions& options);
  absl::Status Forward(std::span<const int> slots,
                       std::span<const int32_t> tokens, bool prefill,
                       bool logprobs_of_all_rows, std::vector<float>* logprobs);
  float* Cache(int slot, int sublayer) const;

  runtime::ModelConfig config_;
  runtime::Backend& backend_;
  QuadraticOptions options_;
  std::vector<runtime::DeviceBuffer> weight_storage_;
  std::vector<Sublayer> sublayers_;
  runtime::TensorView embeddings_, output_kernel_, output_bias_;
  std::vector<runtime::DeviceBuffer> caches_;  // per slot: [sublayer][T][row]
  std::vector<int64_t> positions_;
  std::unique_ptr<SoftmaxAttention> attention_;
  int workspace_rows_ = 0;
  runtime::DeviceBuffer x_, normed_, q_, kvg_, attention_out_, logits_;
};

}  // namespace tvq::bench

#endif  // TVQ_TESTS_BENCH_QUADRATIC_QUADRATIC_TRANSFORMER_H_
