// What a job (GenerationJob, ScoreJob, ...) gets from the scheduler when it
// runs a step: the clock of its request, the observer, and the way to report
// its end. Loop thread only.
#ifndef TVQ_SERVER_SCHEDULER_JOB_CONTEXT_H_
#define TVQ_SERVER_SCHEDULER_JOB_CONTEXT_H_

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/scheduler/request.h"
#include "server/scheduler/scheduler_observer.h"
#include "server/text/tokenizer.h"

namespace tvq::scheduler {

// When a request arrived, got a slot, and produced tokens (InfinitePast =
// not yet).
struct RequestClock {
  absl::Time arrival = absl::Now();
  absl::Time admitted = absl::InfinitePast();
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();
};

inline double Seconds(absl::Duration duration) {
  return absl::ToDoubleSeconds(duration);
}

// Fixed for the scheduler's lifetime.
struct JobEnvironment {
  const runtime::Tokenizer& tokenizer;
  int n_vocab;
  int32_t eos_id;
};

// One call into a job.
struct JobContext {
  const JobEnvironment& environment;
  SchedulerObserver& observer;
  // The request's, for the observer's calls.
  Frontend frontend;
  RequestClock& clock;
  // Reports the end of the request to the observer. A job calls it once,
  // just before its sink hears of the successful end (failures are reported
  // by the scheduler).
  absl::FunctionRef<void(absl::StatusCode, FinishReason)> report_outcome;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_JOB_CONTEXT_H_
