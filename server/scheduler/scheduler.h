// Continuous batching over a fixed pool of state slots.
//
// One loop thread owns the engine and the state pool. Requests wait in a
// bounded admission queue; each step, in a fixed order:
//   1. reap: requests cancelled by their client or past their deadline end
//      (their slots are freed at the end of the step);
//   2. admit: queued requests move into free slots (oldest first);
//   3. plan: PlanStep (decode tokens first, then prefill chunks up to the
//      token budget);
//   4. run: one batched DecodeStep for every decoding slot, then the prefill
//      chunks (TransformerVq::Prefill per slot);
//   5. sample and emit: each request's sink receives its tokens;
//   6. release: finished slots become free, or keep their state under the
//      key the request asked for (KeepState).
// Which slot a request gets is SlotManager's decision: a free one, or the
// least recently used retained state; a request may start from an empty
// state (the default), continue a kept state in place, or start from a copy
// of it, or from a state saved outside the pool (StartFrom::kImport, which
// sessions use); a successful request may also hand its final state back
// (KeepState::save_to) before its sink hears of the success. What each kind of request does with its tokens and
// logprobs lives with its job type (job.h).
// A request that fails (bad input, backend error) fails alone; the loop keeps
// running. Score requests go through the same loop: their sequence is
// prefilled in chunks, with every position's logprobs.
//
// Thread safety: Submit*, Cancel, Stats, Drain and Stop may be called from
// any thread. Sinks and the observer are called from the loop thread (see
// their headers).
#ifndef TVQ_SERVER_SCHEDULER_SCHEDULER_H_
#define TVQ_SERVER_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "server/scheduler/batch_policy.h"
#include "server/scheduler/job_context.h"
#include "server/scheduler/request.h"
#include "server/scheduler/scheduler_observer.h"
#include "server/scheduler/slot.h"
#include "server/scheduler/slot_manager.h"
#include "server/text/tokenizer.h"

namespace tvq::scheduler {

struct SchedulerOptions {
  // Requests that may wait for a slot (beyond the free slots) before new ones
  // get RESOURCE_EXHAUSTED; >= 1.
  int max_queue = 256;
  BatchPolicyOptions batch;
};

struct SchedulerStats {
  int num_slots = 0;
  // Slots holding a running request.
  int busy_slots = 0;
  // Slots a new request can take: empty ones and retained states (which are
  // evicted when needed). free + busy + pinned = num_slots.
  int free_slots = 0;
  // Of the free slots, those holding a retained state.
  int retained_slots = 0;
  // Slots holding a pinned state (never evicted).
  int pinned_slots = 0;
  // Requests waiting for a slot.
  int queued_requests = 0;
  bool draining = false;
};

class Scheduler {
 public:
  // Starts the loop thread. `engine`, `pool` and `tokenizer` must outlive the
  // scheduler and are used by its thread only; `observer` may be null.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      runtime::TransformerVq& engine, runtime::StatePool& pool,
      const runtime::Tokenizer& tokenizer, const SchedulerOptions& options,
      SchedulerObserver* observer = nullptr);

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  // Stop().
  ~Scheduler();

  // Queues a generation. On OK the scheduler owns the request and will end it
  // through `sink`; on error nothing was queued and `sink` is never called.
  // Errors: RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining or
  // stopped), INVALID_ARGUMENT (empty prompt, id outside the vocabulary,
  // start_from without a key).
  // A request that starts from a kept state (request.start_from) fails
  // through `sink` at admission when the state is not there (NOT_FOUND), is
  // in use by a running request (FAILED_PRECONDITION), or no slot can ever
  // hold it (RESOURCE_EXHAUSTED: every other slot pinned); each message
  // names the key.
  absl::StatusOr<RequestHandle> SubmitGeneration(
      GenerationRequest request, std::shared_ptr<TokenSink> sink);
  // Queues a score; same contract.
  absl::StatusOr<RequestHandle> SubmitScore(ScoreRequest request,
                                            std::shared_ptr<ScoreSink> sink);
  // Queues an append (prefill without sampling); same contract. Errors:
  // INVALID_ARGUMENT for no tokens or an id outside the vocabulary.
  absl::StatusOr<RequestHandle> SubmitAppend(AppendRequest request,
                                             std::shared_ptr<AppendSink> sink);

  // Ends the request with CANCELLED at the start of the next step and frees
  // its slot. No-op for unknown or already ended requests.
  void Cancel(RequestHandle handle);

  SchedulerStats Stats() const;

  // The states kept after their requests (KeepState), as of the end of the
  // last step. Mechanism only: sessions will build on it.
  std::vector<KeptState> KeptStates() const;

  // Graceful shutdown: new submissions get UNAVAILABLE at once; accepted
  // requests (running and queued) may finish for up to `timeout`; whatever is
  // left then ends early (generations with FinishReason::kCancelled and the
  // text so far, scores with UNAVAILABLE). Returns how many were cut short.
  int Drain(absl::Duration timeout);

  // Stops the loop thread; requests still accepted fail with UNAVAILABLE.
  // Idempotent.
  void Stop();

 private:
  struct Sequence;

  Scheduler(runtime::TransformerVq& engine, runtime::StatePool& pool,
            const runtime::Tokenizer& tokenizer,
            const SchedulerOptions& options, SchedulerObserver* observer);

  absl::StatusOr<RequestHandle> Enqueue(std::unique_ptr<Sequence> sequence);
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool IsIdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool IsIdleOrStoppingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  // Loop thread only.
  void Loop();
  // Moves queued requests that SlotManager finds room for into `admitted`,
  // oldest first, each with its slot admission (or the error that fails it).
  void TakeAdmissionsLocked(std::vector<std::unique_ptr<Sequence>>& admitted)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Prepares the admitted request's slot (reset or copy) and starts its job.
  void AdmitSequence(std::unique_ptr<Sequence> sequence);
  void RunDecode(const std::vector<int>& decode_slots);
  void RunPrefill(const PrefillChunk& chunk);
  // Calls `operation(job, context)` on the sequence's job, whichever its kind.
  template <typename Operation>
  decltype(auto) RunJob(Sequence& sequence, Operation&& operation);
  // Applies what a job step returned: the slot's next state, or a failure.
  void AfterStep(Sequence& sequence, const absl::StatusOr<SlotState>& next);
  // Ends a request early (drain timeout), as its kind does.
  void CutShort(Sequence& sequence);
  void Fail(Sequence& sequence, const absl::Status& status);
  void ReportOutcome(const Sequence& sequence, absl::StatusCode code,
                     FinishReason reason);
  // Exports the slot of a request that succeeded to its keep.save_to, if any
  // (called just before its sink hears of the success).
  void SaveState(const Sequence& sequence);
  // Frees the slots of finished sequences, or keeps their states.
  void ReleaseFinished();
  std::vector<SlotView> SlotViews() const;

  runtime::TransformerVq& engine_;
  runtime::StatePool& pool_;
  const SchedulerOptions options_;
  SchedulerObserver default_observer_;
  SchedulerObserver* const observer_;
  const int num_slots_;
  const int n_vocab_;
  const JobEnvironment job_environment_;

  mutable absl::Mutex mutex_;
  std::deque<std::unique_ptr<Sequence>> queue_ ABSL_GUARDED_BY(mutex_);
  // Accepted requests that have not ended.
  std::unordered_set<RequestHandle> live_ ABSL_GUARDED_BY(mutex_);
  std::vector<RequestHandle> cancel_requests_ ABSL_GUARDED_BY(mutex_);
  RequestHandle next_handle_ ABSL_GUARDED_BY(mutex_) = 1;
  // Running requests (admitted this step included).
  int busy_slots_ ABSL_GUARDED_BY(mutex_) = 0;
  // Mirrors of slot_manager_, as of the end of the last step.
  int retained_slots_ ABSL_GUARDED_BY(mutex_) = 0;
  int pinned_slots_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<KeptState> kept_states_ ABSL_GUARDED_BY(mutex_);
  bool draining_ ABSL_GUARDED_BY(mutex_) = false;
  bool cut_short_ ABSL_GUARDED_BY(mutex_) = false;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;

  // Loop thread only (the loop also calls it while holding mutex_).
  SlotManager slot_manager_;
  // Loop thread only: slot index -> its running sequence (null = none).
  std::vector<std::unique_ptr<Sequence>> slots_;
  // Admitted requests that failed before getting a slot (bad StartFrom);
  // ended at release.
  std::vector<std::unique_ptr<Sequence>> unslotted_;
  uint64_t next_admission_order_ = 0;
  std::vector<float> logprob_rows_;

  std::thread thread_;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_SCHEDULER_H_
