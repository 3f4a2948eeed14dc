// A generation as the scheduler runs it: feed the prompt, then sample one
// token per step until a stop condition; report tokens to a TokenSink.
// Implements the job operations listed in job.h.
#ifndef TVQ_SERVER_SCHEDULER_GENERATION_JOB_H_
#define TVQ_SERVER_SCHEDULER_GENERATION_JOB_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/transformer_vq.h"
#include "server/scheduler/job_context.h"
#include "server/scheduler/output_processor.h"
#include "server/scheduler/request.h"
#include "server/scheduler/request_kind.h"
#include "server/scheduler/slot.h"

namespace tvq::scheduler {

class GenerationJob {
 public:
  static constexpr RequestKind kKind = RequestKind::kGenerate;

  GenerationJob(GenerationRequest request, std::shared_ptr<TokenSink> sink);
  GenerationJob(GenerationJob&&) = default;

  const std::string& request_id() const { return request_->request_id; }
  Frontend frontend() const { return request_->frontend; }
  absl::Time deadline() const { return request_->deadline; }
  const StartFrom& start_from() const { return request_->start_from; }
  const KeepState& keep() const { return request_->keep; }
  // The tokens to prefill: the prompt.
  const std::vector<int32_t>& tokens() const { return request_->prompt; }
  int generated() const { return generated_; }
  // The last sampled token, not fed to the model (-1 before the first).
  int32_t pending_token() const { return last_sampled_; }
  // The token the next decode step feeds.
  int32_t decode_input() const { return last_sampled_; }

  // At admission: builds the output path.
  void Start(const JobContext& context);
  // Rows a prefill chunk must return: the last chunk's last one.
  runtime::LogprobRows PrefillRows(bool last_chunk) const;
  // After a prefill chunk of `num_tokens` from `first`; `logprobs` holds the
  // rows PrefillRows asked for. Returns the slot's next state; an error
  // fails the request.
  absl::StatusOr<SlotState> AfterPrefill(const JobContext& context,
                                         std::span<const float> logprobs,
                                         int64_t first, int num_tokens,
                                         bool last_chunk);
  // After a decode step, with this sequence's row.
  absl::StatusOr<SlotState> AfterDecode(const JobContext& context,
                                        std::span<const float> row);
  // Ends early (drain timeout): the text so far, FinishReason::kCancelled.
  void CutShort(const JobContext& context);
  // Tells the sink (the scheduler has reported the outcome).
  void Fail(const absl::Status& status);

 private:
  // Samples, emits, and finishes when a stop condition holds.
  absl::StatusOr<SlotState> EmitToken(const JobContext& context,
                                      std::span<const float> row);
  void Finish(const JobContext& context, EmittedToken ending);

  // Boxed so that the OutputProcessor's reference stays valid when the job
  // moves.
  std::unique_ptr<GenerationRequest> request_;
  std::shared_ptr<TokenSink> sink_;
  // Null until admission.
  std::unique_ptr<OutputProcessor> output_;
  int32_t last_sampled_ = -1;
  int generated_ = 0;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_GENERATION_JOB_H_
