#include "server/metrics/scheduler_metrics_observer.h"

namespace tvq::metrics {

using scheduler::Frontend;
using scheduler::RequestKind;
using scheduler::RequestOutcome;
using scheduler::StepPhase;

std::string_view FinishedReasonLabel(const RequestOutcome& outcome) {
  switch (outcome.status_code) {
    case absl::StatusCode::kOk:
      return scheduler::SamplesTokens(outcome.kind)
                 ? scheduler::FinishReasonName(outcome.finish_reason)
                 : "complete";
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kUnavailable:
      return "cancelled";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline";
    default:
      return "error";
  }
}

void SchedulerMetricsObserver::OnRequestRejected(RequestKind kind,
                                                 Frontend frontend,
                                                 absl::StatusCode code) {
  metrics_.CountRejected(kind, frontend, static_cast<int>(code));
}

void SchedulerMetricsObserver::OnRequestAdmitted(RequestKind kind,
                                                 Frontend frontend,
                                                 double queue_seconds) {
  metrics_.queue_wait(kind, frontend).Observe(queue_seconds);
}

void SchedulerMetricsObserver::OnFirstToken(Frontend frontend,
                                            double seconds) {
  metrics_.time_to_first_token(frontend).Observe(seconds);
  metrics_.generated_tokens(frontend).Increment();
}

void SchedulerMetricsObserver::OnToken(Frontend frontend,
                                       double inter_token_seconds) {
  metrics_.inter_token_latency(frontend).Observe(inter_token_seconds);
  metrics_.generated_tokens(frontend).Increment();
}

void SchedulerMetricsObserver::OnPrefillTokens(Frontend frontend,
                                               int num_tokens) {
  metrics_.prompt_tokens(frontend).Increment(num_tokens);
}

void SchedulerMetricsObserver::OnRequestFinished(
    const RequestOutcome& outcome) {
  const Frontend frontend = outcome.frontend;
  metrics_.CountFinished(outcome.kind, frontend, FinishedReasonLabel(outcome));
  metrics_.request_duration(outcome.kind, frontend)
      .Observe(outcome.total_seconds);
  metrics_.request_prompt_tokens(outcome.kind, frontend)
      .Observe(outcome.prompt_tokens);
  // The prefill ended when a sampling kind (generation) produced its first
  // token, or when another kind (score) completed.
  const bool samples_tokens = scheduler::SamplesTokens(outcome.kind);
  const bool prefilled = samples_tokens
                             ? outcome.generated_tokens > 0
                             : outcome.status_code == absl::StatusCode::kOk;
  if (prefilled) {
    metrics_.prefill_duration(outcome.kind, frontend).Observe(outcome.prefill_seconds);
  }
  if (samples_tokens) {
    metrics_.request_generated_tokens(frontend).Observe(outcome.generated_tokens);
    if (outcome.generated_tokens > 0) {
      metrics_.decode_duration(frontend).Observe(outcome.decode_seconds);
    }
  }
}

void SchedulerMetricsObserver::OnStep(StepPhase phase, int batch_size,
                                      int /*num_tokens*/, double seconds) {
  metrics_.step_duration(phase).Observe(seconds);
  if (phase == StepPhase::kDecode) metrics_.batch_size().Observe(batch_size);
}

void SchedulerMetricsObserver::OnEngineError(StepPhase phase,
                                             const absl::Status& /*status*/) {
  metrics_.engine_errors(phase).Increment();
}

}  // namespace tvq::metrics
