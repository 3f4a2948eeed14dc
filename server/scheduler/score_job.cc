#include "server/scheduler/score_job.h"

#include <utility>

#include "server/engine/sampler.h"

namespace tvq::scheduler {

ScoreJob::ScoreJob(ScoreRequest request, std::shared_ptr<ScoreSink> sink)
    : request_(std::move(request)),
      feed_(request_.tokens.begin(),
            request_.hold_last_token && !request_.tokens.empty()
                ? request_.tokens.end() - 1
                : request_.tokens.end()),
      sink_(std::move(sink)) {}

absl::StatusOr<SlotState> ScoreJob::AfterPrefill(
    const JobContext& context, std::span<const float> logprobs, int64_t first,
    int num_tokens, bool last_chunk) {
  const std::vector<int32_t>& tokens = request_.tokens;
  // Every position but the last one has a next token to score.
  const int64_t total = static_cast<int64_t>(tokens.size());
  const int n_vocab = context.environment.n_vocab;
  const int top = request_.top_logprobs;
  for (int i = 0; i < num_tokens; ++i) {
    const int64_t position = first + i;
    if (position + 1 >= total) break;
    const std::span<const float> row =
        logprobs.subspan(static_cast<size_t>(i) * n_vocab, n_vocab);
    TokenLogprob entry;
    entry.token_id = tokens[position + 1];
    entry.logprob = row[entry.token_id];
    if (top > 0) runtime::TopAlternatives(row, top, &entry.top_alternatives);
    result_.total_logprob += entry.logprob;
    result_.token_logprobs.push_back(std::move(entry));
  }
  if (!last_chunk) return SlotState::kPrefilling;
  const RequestClock& clock = context.clock;
  const absl::Time now = absl::Now();
  result_.usage.prompt_tokens = static_cast<int>(tokens.size());
  result_.tokens = tokens;
  result_.usage.queue_time_seconds = Seconds(clock.admitted - clock.arrival);
  result_.usage.total_time_seconds = Seconds(now - clock.arrival);
  context.report_outcome(absl::StatusCode::kOk, FinishReason::kUnspecified);
  sink_->OnScored(std::move(result_));
  return SlotState::kFinished;
}

absl::StatusOr<SlotState> ScoreJob::AfterDecode(
    const JobContext& /*context*/, std::span<const float> /*row*/) {
  return absl::InternalError("a score request was put in a decode step");
}

void ScoreJob::CutShort(const JobContext& context) {
  const absl::Status status = absl::UnavailableError(
      "the server shut down before the score was complete");
  context.report_outcome(status.code(), FinishReason::kUnspecified);
  Fail(status);
}

void ScoreJob::Fail(const absl::Status& status) { sink_->OnFailed(status); }

}  // namespace tvq::scheduler
