// Hooks for metrics: the scheduler reports what happens through this
// interface; the default does nothing. Callbacks run on the scheduler thread,
// except OnRequestQueued and OnRequestRejected (on the submitting thread):
// they must be cheap, non-blocking and thread-safe. Request-level calls say
// which front end the request came from (its `frontend` field).
#ifndef TVQ_SERVER_SCHEDULER_SCHEDULER_OBSERVER_H_
#define TVQ_SERVER_SCHEDULER_SCHEDULER_OBSERVER_H_

#include <string_view>

#include "absl/status/status.h"
#include "server/scheduler/frontend.h"
#include "server/scheduler/request.h"
#include "server/scheduler/request_kind.h"

namespace tvq::scheduler {

enum class StepPhase { kPrefill, kDecode };

constexpr std::string_view StepPhaseName(StepPhase phase) {
  return phase == StepPhase::kPrefill ? "prefill" : "decode";
}

// How a request ended.
struct RequestOutcome {
  RequestKind kind = RequestKind::kGenerate;
  Frontend frontend = Frontend::kGrpc;
  // OK when the request completed (then finish_reason says why).
  absl::StatusCode status_code = absl::StatusCode::kOk;
  FinishReason finish_reason = FinishReason::kUnspecified;
  int prompt_tokens = 0;
  int generated_tokens = 0;
  // Seconds waiting for a slot (0 when it never got one).
  double queue_seconds = 0;
  // Prefill seconds (admission to first token / to the end of scoring).
  double prefill_seconds = 0;
  // Seconds from first token to the end (generation).
  double decode_seconds = 0;
  // Arrival to end.
  double total_seconds = 0;
};

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  // A request entered the admission queue (queue_depth includes it).
  virtual void OnRequestQueued(RequestKind /*kind*/, int /*queue_depth*/) {}
  // A request was refused at submission (RESOURCE_EXHAUSTED, UNAVAILABLE).
  virtual void OnRequestRejected(RequestKind /*kind*/, Frontend /*frontend*/,
                                 absl::StatusCode /*code*/) {}
  // A request got a slot after waiting `queue_seconds`.
  virtual void OnRequestAdmitted(RequestKind /*kind*/, Frontend /*frontend*/,
                                 double /*queue_seconds*/) {}
  // A generation produced its first token, `seconds` after arrival.
  virtual void OnFirstToken(Frontend /*frontend*/, double /*seconds*/) {}
  // A generation produced a later token, `seconds` after its previous one.
  virtual void OnToken(Frontend /*frontend*/,
                       double /*inter_token_seconds*/) {}
  // Prompt tokens fed to the model for a request (each prefill chunk).
  virtual void OnPrefillTokens(Frontend /*frontend*/, int /*num_tokens*/) {}
  virtual void OnRequestFinished(const RequestOutcome& /*outcome*/) {}
  // One engine call: phase, sequences in it, tokens in it, seconds taken.
  virtual void OnStep(StepPhase /*phase*/, int /*batch_size*/,
                      int /*num_tokens*/, double /*seconds*/) {}
  // Occupancy after a step: busy slots of num_slots, requests waiting.
  virtual void OnOccupancy(int /*busy_slots*/, int /*num_slots*/,
                           int /*queued_requests*/) {}
  // A retained state (KeepState) was evicted to give its slot to a request.
  virtual void OnKeptStateEvicted(std::string_view /*key*/) {}
  // An engine call failed (the affected requests fail with `status`).
  virtual void OnEngineError(StepPhase /*phase*/,
                             const absl::Status& /*status*/) {}
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_SCHEDULER_OBSERVER_H_
