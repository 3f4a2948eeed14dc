// Maps the scheduler's events onto ServerMetrics: the scheduler knows
// nothing of Prometheus, and its logic is untouched by metrics.
//
// Occupancy (queue length, running requests, slots) is not taken from
// OnRequestQueued/OnOccupancy: those gauges are read from the scheduler at
// scrape time (EngineCollector), which is exact even when the server idles.
#ifndef TVQ_SERVER_METRICS_SCHEDULER_METRICS_OBSERVER_H_
#define TVQ_SERVER_METRICS_SCHEDULER_METRICS_OBSERVER_H_

#include <string_view>

#include "absl/status/status.h"
#include "server/metrics/metrics.h"
#include "server/scheduler/scheduler_observer.h"

namespace tvq::metrics {

// The tvq_requests_finished_total reason of an outcome: the finish reason of
// a completed generation ("length", "eos", ...), "complete" for a completed
// score, "cancelled" for CANCELLED (the client) and UNAVAILABLE (the server
// stopped), "deadline" for DEADLINE_EXCEEDED, "error" for anything else.
std::string_view FinishedReasonLabel(const scheduler::RequestOutcome& outcome);

class SchedulerMetricsObserver final : public scheduler::SchedulerObserver {
 public:
  // `metrics` must outlive the observer.
  explicit SchedulerMetricsObserver(ServerMetrics& metrics)
      : metrics_(metrics) {}

  void OnRequestRejected(scheduler::RequestKind kind,
                         scheduler::Frontend frontend,
                         absl::StatusCode code) override;
  void OnRequestAdmitted(scheduler::RequestKind kind,
                         scheduler::Frontend frontend,
                         double queue_seconds) override;
  void OnFirstToken(scheduler::Frontend frontend, double seconds) override;
  void OnToken(scheduler::Frontend frontend,
               double inter_token_seconds) override;
  void OnPrefillTokens(scheduler::Frontend frontend, int num_tokens) override;
  void OnRequestFinished(const scheduler::RequestOutcome& outcome) override;
  void OnStep(scheduler::StepPhase phase, int batch_size, int num_tokens,
              double seconds) override;
  void OnEngineError(scheduler::StepPhase phase,
                     const absl::Status& status) override;

 private:
  ServerMetrics& metrics_;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_SCHEDULER_METRICS_OBSERVER_H_
