// An append as the scheduler runs it: feed tokens into a state without
// sampling (sessions: CreateSession's prompt, AppendToSession), then report
// to an AppendSink. Implements the job operations listed in job.h.
#ifndef TVQ_SERVER_SCHEDULER_APPEND_JOB_H_
#define TVQ_SERVER_SCHEDULER_APPEND_JOB_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/transformer_vq.h"
#include "server/scheduler/job_context.h"
#include "server/scheduler/request.h"
#include "server/scheduler/request_kind.h"
#include "server/scheduler/slot.h"

namespace tvq::scheduler {

class AppendJob {
 public:
  static constexpr RequestKind kKind = RequestKind::kAppend;

  AppendJob(AppendRequest request, std::shared_ptr<AppendSink> sink);

  const std::string& request_id() const { return request_.request_id; }
  Frontend frontend() const { return request_.frontend; }
  absl::Time deadline() const { return request_.deadline; }
  const StartFrom& start_from() const { return request_.start_from; }
  const KeepState& keep() const { return request_.keep; }
  // The tokens to prefill.
  const std::vector<int32_t>& tokens() const { return request_.tokens; }
  int generated() const { return 0; }
  // The token the caller held back (kept with the state).
  int32_t pending_token() const { return request_.pending_token; }
  // An append never decodes.
  int32_t decode_input() const { return -1; }

  void Start(const JobContext& /*context*/) {}
  // No logprobs are needed.
  runtime::LogprobRows PrefillRows(bool /*last_chunk*/) const {
    return runtime::LogprobRows::kNone;
  }
  absl::StatusOr<SlotState> AfterPrefill(const JobContext& context,
                                         std::span<const float> logprobs,
                                         int64_t first, int num_tokens,
                                         bool last_chunk);
  // INTERNAL: an append is never in a decode step.
  absl::StatusOr<SlotState> AfterDecode(const JobContext& context,
                                        std::span<const float> row);
  // Ends early (drain timeout): the state is incomplete, so the sink gets
  // UNAVAILABLE. Reports the outcome itself.
  void CutShort(const JobContext& context);
  void Fail(const absl::Status& status);

 private:
  AppendRequest request_;
  std::shared_ptr<AppendSink> sink_;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_APPEND_JOB_H_
