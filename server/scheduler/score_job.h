// A score as the scheduler runs it: feed the sequence in chunks with every
// position's logprobs, collect the logprob of each next token, report the
// result to a ScoreSink. Implements the job operations listed in job.h.
#ifndef TVQ_SERVER_SCHEDULER_SCORE_JOB_H_
#define TVQ_SERVER_SCHEDULER_SCORE_JOB_H_

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

class ScoreJob {
 public:
  static constexpr RequestKind kKind = RequestKind::kScore;

  ScoreJob(ScoreRequest request, std::shared_ptr<ScoreSink> sink);

  const std::string& request_id() const { return request_.request_id; }
  Frontend frontend() const { return request_.frontend; }
  absl::Time deadline() const { return request_.deadline; }
  const StartFrom& start_from() const { return request_.start_from; }
  const KeepState& keep() const { return request_.keep; }
  // The tokens to prefill: the scored sequence (without its last token when
  // the request holds it back).
  const std::vector<int32_t>& tokens() const { return feed_; }
  int generated() const { return 0; }
  // The held-back last token (hold_last_token), else -1: every token is fed.
  int32_t pending_token() const {
    return request_.hold_last_token ? request_.tokens.back() : -1;
  }
  // A score never decodes.
  int32_t decode_input() const { return -1; }

  void Start(const JobContext& /*context*/) {}
  // Every chunk needs every row.
  runtime::LogprobRows PrefillRows(bool /*last_chunk*/) const {
    return runtime::LogprobRows::kAll;
  }
  absl::StatusOr<SlotState> AfterPrefill(const JobContext& context,
                                         std::span<const float> logprobs,
                                         int64_t first, int num_tokens,
                                         bool last_chunk);
  // INTERNAL: a score is never in a decode step.
  absl::StatusOr<SlotState> AfterDecode(const JobContext& context,
                                        std::span<const float> row);
  // Ends early (drain timeout): a partial score is no score, so the sink
  // gets UNAVAILABLE. Reports the outcome itself.
  void CutShort(const JobContext& context);
  void Fail(const absl::Status& status);

 private:
  ScoreRequest request_;
  std::vector<int32_t> feed_;
  std::shared_ptr<ScoreSink> sink_;
  ScoreResult result_;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_SCORE_JOB_H_
