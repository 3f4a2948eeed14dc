#include "server/scheduler/append_job.h"

#include <utility>

namespace tvq::scheduler {

AppendJob::AppendJob(AppendRequest request, std::shared_ptr<AppendSink> sink)
    : request_(std::move(request)), sink_(std::move(sink)) {}

absl::StatusOr<SlotState> AppendJob::AfterPrefill(
    const JobContext& context, std::span<const float> /*logprobs*/,
    int64_t /*first*/, int /*num_tokens*/, bool last_chunk) {
  if (!last_chunk) return SlotState::kPrefilling;
  const RequestClock& clock = context.clock;
  AppendResult result;
  result.usage.prompt_tokens = static_cast<int>(request_.tokens.size());
  result.usage.queue_time_seconds = Seconds(clock.admitted - clock.arrival);
  result.usage.total_time_seconds = Seconds(absl::Now() - clock.arrival);
  context.report_outcome(absl::StatusCode::kOk, FinishReason::kUnspecified);
  sink_->OnAppended(std::move(result));
  return SlotState::kFinished;
}

absl::StatusOr<SlotState> AppendJob::AfterDecode(
    const JobContext& /*context*/, std::span<const float> /*row*/) {
  return absl::InternalError("an append request was put in a decode step");
}

void AppendJob::CutShort(const JobContext& context) {
  const absl::Status status = absl::UnavailableError(
      "the server shut down before the tokens were appended");
  context.report_outcome(status.code(), FinishReason::kUnspecified);
  Fail(status);
}

void AppendJob::Fail(const absl::Status& status) { sink_->OnFailed(status); }

}  // namespace tvq::scheduler
