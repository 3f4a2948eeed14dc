// The per-token output path of one generation: sampling a token from the
// model's logprob row, its logprob and alternatives, detokenizing, and stop
// matching (eos, stop token ids, stop sequences). It keeps no timing and
// calls no sink: GenerationJob does that.
//
// One per admitted generation, used by the scheduler's loop thread only.
#ifndef TVQ_SERVER_SCHEDULER_OUTPUT_PROCESSOR_H_
#define TVQ_SERVER_SCHEDULER_OUTPUT_PROCESSOR_H_

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/sampler.h"
#include "server/scheduler/request.h"
#include "server/text/incremental_detokenizer.h"
#include "server/text/stop_sequence_matcher.h"
#include "server/text/tokenizer.h"

namespace tvq::scheduler {

// What one sampled token produced.
struct EmittedToken {
  TokenUpdate update;
  // kUnspecified: the generation goes on (max_new_tokens is the caller's).
  FinishReason reason = FinishReason::kUnspecified;
  std::string matched_stop_sequence;
  int32_t matched_stop_token_id = -1;
};

class OutputProcessor {
 public:
  // `request` must outlive the processor.
  OutputProcessor(const GenerationRequest& request,
                  const runtime::Tokenizer& tokenizer, int n_vocab,
                  int32_t eos_id);

  // Samples the `index`-th generated token (0-based) from `row`.
  absl::StatusOr<int32_t> Sample(std::span<const float> row, int index);
  // The update for `token` (sampled from `row`): logprobs when asked, text,
  // and whether it ends the generation (eos, stop token, stop sequence).
  // Errors come from the detokenizer.
  absl::StatusOr<EmittedToken> Process(int32_t token,
                                       std::span<const float> row);
  // The generation ends with `ending.reason`: appends whatever the
  // detokenizer and the stop matcher hold back (it may still complete a stop
  // sequence, which then becomes the reason unless it is kCancelled).
  void Finish(EmittedToken& ending);

 private:
  const GenerationRequest& request_;
  const int32_t eos_id_;
  runtime::Sampler sampler_;
  runtime::IncrementalDetokenizer detokenizer_;
  runtime::StopSequenceMatcher stops_;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_OUTPUT_PROCESSOR_H_
