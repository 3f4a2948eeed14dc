// Next-token selection for one sequence: penalties, temperature, top-k,
// top-p, min-p and a counter-based random draw; plus the logprobs reported
// to clients (always from the model's unmodified distribution).
//
// A Sampler belongs to one request. Its draws depend only on (seed, step), so
// a request's tokens never depend on the other sequences of a batch.
#ifndef TVQ_SERVER_ENGINE_SAMPLER_H_
#define TVQ_SERVER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace tvq::runtime {

struct SamplingParams {
  // 0 = greedy (argmax, lowest id on ties); otherwise logprobs / temperature.
  float temperature = 1.0f;
  // Keep the k most likely tokens; 0 (or >= n_vocab) = no limit.
  int top_k = 0;
  // Keep the smallest most-likely set with probability >= top_p; 1 = off.
  float top_p = 1.0f;
  // Drop tokens with probability < min_p * max probability; 0 = off.
  float min_p = 0.0f;
  // On every token seen (prompt and generated): x > 0 ? x / p : x * p,
  // applied to the model's logprobs (all <= 0). 1 = off.
  float repetition_penalty = 1.0f;
  // Subtracted from every generated token's logprob. 0 = off.
  float presence_penalty = 0.0f;
  // Subtracted, times the token's count, from every generated token. 0 = off.
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
};

// The uniform draw in [0, 1) for (seed, step): a pure function of its
// arguments (a SplitMix64-style mix of both), 53 random bits.
double CounterUniform(uint64_t seed, uint64_t step);

struct TokenAlternative {
  int32_t token_id = 0;
  float logprob = 0;
};

// The `count` largest entries of `logprobs` (a row of n_vocab), largest first,
// lower id first on ties. `count` is clamped to the row size.
void TopAlternatives(std::span<const float> logprobs, int count,
                     std::vector<TokenAlternative>* out);

class Sampler {
 public:
  Sampler(const SamplingParams& params, int n_vocab);

  const SamplingParams& params() const { return params_; }

  // Records prompt tokens (they count for repetition_penalty only). Ids
  // outside [0, n_vocab) are ignored (validation rejects them earlier).
  void ObservePrompt(std::span<const int32_t> tokens);

  // Picks the token of generation step `step` (0 for the first generated
  // token) from the model's next-token logprobs (n_vocab floats), and records
  // it as generated. Fails with Internal when the row has the wrong size or
  // no finite entry.
  absl::StatusOr<int32_t> Sample(std::span<const float> logprobs,
                                 uint64_t step);

 private:
  // Writes the penalized logprobs into adjusted_; returns true when some
  // penalty changed anything.
  bool ApplyPenalties(std::span<const float> logprobs);

  SamplingParams params_;
  int n_vocab_;
  // Tokens seen (prompt or generated), for the repetition penalty.
  std::vector<bool> seen_;
  std::vector<int32_t> seen_list_;
  // Generated token -> count, for presence and frequency penalties.
  std::unordered_map<int32_t, int> generated_counts_;
  // Workspaces reused across steps.
  std::vector<float> adjusted_;
  std::vector<int32_t> order_;
  std::vector<double> weights_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_ENGINE_SAMPLER_H_
