#include "server/scheduler/generation_job.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace tvq::scheduler {
namespace {

// Keeps the code, prefixes the message with what failed.
absl::Status Annotate(const absl::Status& status, std::string_view what) {
  return absl::Status(status.code(),
                      absl::StrFormat("%s: %s", what, status.message()));
}

}  // namespace

GenerationJob::GenerationJob(GenerationRequest request,
                             std::shared_ptr<TokenSink> sink)
    : request_(std::make_unique<GenerationRequest>(std::move(request))),
      sink_(std::move(sink)) {}

void GenerationJob::Start(const JobContext& context) {
  const JobEnvironment& environment = context.environment;
  output_ = std::make_unique<OutputProcessor>(*request_, environment.tokenizer,
                                              environment.n_vocab,
                                              environment.eos_id);
}

runtime::LogprobRows GenerationJob::PrefillRows(bool last_chunk) const {
  return last_chunk ? runtime::LogprobRows::kLast : runtime::LogprobRows::kNone;
}

absl::StatusOr<SlotState> GenerationJob::AfterPrefill(
    const JobContext& context, std::span<const float> logprobs,
    int64_t /*first*/, int /*num_tokens*/, bool last_chunk) {
  if (!last_chunk) return SlotState::kPrefilling;
  return EmitToken(context, logprobs.subspan(0, context.environment.n_vocab));
}

absl::StatusOr<SlotState> GenerationJob::AfterDecode(
    const JobContext& context, std::span<const float> row) {
  return EmitToken(context, row);
}

absl::StatusOr<SlotState> GenerationJob::EmitToken(const JobContext& context,
                                                   std::span<const float> row) {
  absl::StatusOr<int32_t> sampled = output_->Sample(row, generated_);
  if (!sampled.ok()) return Annotate(sampled.status(), "sampling failed");
  const int32_t token = *sampled;
  last_sampled_ = token;
  RequestClock& clock = context.clock;
  const absl::Time now = absl::Now();
  ++generated_;
  if (generated_ == 1) {
    clock.first_token = now;
    context.observer.OnFirstToken(context.frontend, Seconds(now - clock.arrival));
  } else {
    context.observer.OnToken(context.frontend, Seconds(now - clock.last_token));
  }
  clock.last_token = now;

  absl::StatusOr<EmittedToken> emitted = output_->Process(token, row);
  if (!emitted.ok()) return Annotate(emitted.status(), "detokenizing");
  if (emitted->reason == FinishReason::kUnspecified &&
      generated_ >= request_->max_new_tokens) {
    emitted->reason = FinishReason::kLength;
  }
  if (emitted->reason == FinishReason::kUnspecified) {
    sink_->OnTokens(std::move(emitted->update));
    return SlotState::kDecoding;
  }
  Finish(context, *std::move(emitted));
  return SlotState::kFinished;
}

void GenerationJob::CutShort(const JobContext& context) {
  EmittedToken ending;
  ending.reason = FinishReason::kCancelled;
  Finish(context, std::move(ending));
}

void GenerationJob::Finish(const JobContext& context, EmittedToken ending) {
  if (output_ != nullptr) output_->Finish(ending);
  const RequestClock& clock = context.clock;
  const absl::Time now = absl::Now();
  Completion completion;
  completion.finish_reason = ending.reason;
  completion.matched_stop_sequence = std::move(ending.matched_stop_sequence);
  completion.matched_stop_token_id = ending.matched_stop_token_id;
  Usage& usage = completion.usage;
  usage.prompt_tokens = static_cast<int>(request_->prompt.size());
  usage.generated_tokens = generated_;
  if (clock.admitted != absl::InfinitePast()) {
    usage.queue_time_seconds = Seconds(clock.admitted - clock.arrival);
  } else {
    usage.queue_time_seconds = Seconds(now - clock.arrival);
  }
  if (clock.first_token != absl::InfinitePast()) {
    usage.time_to_first_token_seconds =
        Seconds(clock.first_token - clock.arrival);
  }
  usage.total_time_seconds = Seconds(now - clock.arrival);
  context.report_outcome(absl::StatusCode::kOk, ending.reason);
  sink_->OnFinished(std::move(ending.update), completion);
}

void GenerationJob::Fail(const absl::Status& status) {
  sink_->OnFailed(status);
}

}  // namespace tvq::scheduler
