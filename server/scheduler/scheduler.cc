#include "server/scheduler/scheduler.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_format.h"
#include "server/scheduler/job.h"

namespace tvq::scheduler {

// One accepted request: its job and where it stands in the loop.
struct Scheduler::Sequence {
  explicit Sequence(Job job_in) : job(std::move(job_in)) {}

  RequestHandle handle = 0;
  Job job;
  RequestClock clock;

  int slot = -1;
  SlotState state = SlotState::kIdle;
  uint64_t admission_order = 0;
  // Tokens of tokens() already fed to the model.
  int64_t prefilled = 0;
  // SlotManager's decision, taken when the request leaves the queue.
  absl::StatusOr<SlotAdmission> admission =
      absl::FailedPreconditionError("not admitted");
  // The job ended successfully (only then may it keep its state).
  bool completed = false;

  RequestKind kind() const { return KindOf(job); }
  Frontend frontend() const {
    return std::visit([](const auto& job) { return job.frontend(); }, job);
  }
  const std::vector<int32_t>& tokens() const {
    return std::visit(
        [](const auto& job) -> const std::vector<int32_t>& {
          return job.tokens();
        },
        job);
  }
  absl::Time deadline() const {
    return std::visit([](const auto& job) { return job.deadline(); }, job);
  }
  const StartFrom& start_from() const {
    return std::visit(
        [](const auto& job) -> const StartFrom& { return job.start_from(); },
        job);
  }
  const KeepState& keep() const {
    return std::visit(
        [](const auto& job) -> const KeepState& { return job.keep(); }, job);
  }
  int generated() const {
    return std::visit([](const auto& job) { return job.generated(); }, job);
  }
  int32_t pending_token() const {
    return std::visit([](const auto& job) { return job.pending_token(); }, job);
  }
};

namespace {

absl::Status CheckTokens(const std::vector<int32_t>& tokens, int n_vocab,
                         const char* what) {
  return runtime::CheckTokenIds(tokens, n_vocab, what);
}

// A StartFrom that names a kept state must name it.
absl::Status CheckStartFrom(const StartFrom& start) {
  if ((start.mode == StartFrom::Mode::kContinue ||
       start.mode == StartFrom::Mode::kCopy) &&
      start.key.empty()) {
    return absl::InvalidArgumentError(
        "start_from: continuing or copying a kept state needs its key");
  }
  return absl::OkStatus();
}

// Keeps the code, prefixes the message with what failed.
absl::Status Annotate(const absl::Status& status, std::string_view what) {
  return absl::Status(status.code(),
                      absl::StrFormat("%s: %s", what, status.message()));
}

// What SlotManager is asked for: an imported state needs a slot like an
// empty one (the scheduler then imports into it).
StartFrom SlotStart(const StartFrom& start) {
  if (start.mode != StartFrom::Mode::kImport) return start;
  return StartFrom{};
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    runtime::TransformerVq& engine, runtime::StatePool& pool,
    const runtime::Tokenizer& tokenizer, const SchedulerOptions& options,
    SchedulerObserver* observer) {
  if (options.max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "scheduler: max_queue must be >= 1, got %d", options.max_queue));
  }
  if (options.batch.step_token_budget < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scheduler: step_token_budget must be >= 1, got %d",
                        options.batch.step_token_budget));
  }
  if (options.batch.prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scheduler: prefill_chunk must be >= 1, got %d",
                        options.batch.prefill_chunk));
  }
  if (pool.num_slots() < 1) {
    return absl::InvalidArgumentError("scheduler: the state pool has no slot");
  }
  std::unique_ptr<Scheduler> scheduler(
      new Scheduler(engine, pool, tokenizer, options, observer));
  scheduler->thread_ = std::thread([raw = scheduler.get()] { raw->Loop(); });
  return scheduler;
}

Scheduler::Scheduler(runtime::TransformerVq& engine, runtime::StatePool& pool,
                     const runtime::Tokenizer& tokenizer,
                     const SchedulerOptions& options,
                     SchedulerObserver* observer)
    : engine_(engine),
      pool_(pool),
      options_(options),
      observer_(observer != nullptr ? observer : &default_observer_),
      num_slots_(pool.num_slots()),
      n_vocab_(engine.config().n_vocab),
      job_environment_{.tokenizer = tokenizer,
                       .n_vocab = engine.config().n_vocab,
                       .eos_id = engine.config().eos_id},
      slot_manager_(pool.num_slots()),
      slots_(pool.num_slots()) {}

Scheduler::~Scheduler() { Stop(); }

absl::StatusOr<RequestHandle> Scheduler::SubmitGeneration(
    GenerationRequest request, std::shared_ptr<TokenSink> sink) {
  if (sink == nullptr) return absl::InvalidArgumentError("sink is null");
  if (request.prompt.empty()) {
    return absl::InvalidArgumentError("prompt is empty");
  }
  if (absl::Status status = CheckTokens(request.prompt, n_vocab_, "prompt");
      !status.ok()) {
    return status;
  }
  if (request.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_new_tokens must be >= 1, got %d", request.max_new_tokens));
  }
  if (absl::Status status = CheckStartFrom(request.start_from); !status.ok()) {
    return status;
  }
  return Enqueue(std::make_unique<Sequence>(Job(
      std::in_place_type<GenerationJob>, std::move(request), std::move(sink))));
}

absl::StatusOr<RequestHandle> Scheduler::SubmitScore(
    ScoreRequest request, std::shared_ptr<ScoreSink> sink) {
  if (sink == nullptr) return absl::InvalidArgumentError("sink is null");
  if (request.tokens.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a scored sequence needs at least 2 tokens, got %d",
                        request.tokens.size()));
  }
  if (absl::Status status = CheckTokens(request.tokens, n_vocab_, "tokens");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckStartFrom(request.start_from); !status.ok()) {
    return status;
  }
  return Enqueue(std::make_unique<Sequence>(
      Job(std::in_place_type<ScoreJob>, std::move(request), std::move(sink))));
}

absl::StatusOr<RequestHandle> Scheduler::SubmitAppend(
    AppendRequest request, std::shared_ptr<AppendSink> sink) {
  if (sink == nullptr) return absl::InvalidArgumentError("sink is null");
  if (request.tokens.empty()) {
    return absl::InvalidArgumentError("an append needs at least 1 token");
  }
  if (absl::Status status = CheckTokens(request.tokens, n_vocab_, "tokens");
      !status.ok()) {
    return status;
  }
  if (absl::Status status = CheckStartFrom(request.start_from); !status.ok()) {
    return status;
  }
  return Enqueue(std::make_unique<Sequence>(
      Job(std::in_place_type<AppendJob>, std::move(request), std::move(sink))));
}

absl::StatusOr<RequestHandle> Scheduler::Enqueue(
    std::unique_ptr<Sequence> sequence) {
  const RequestKind kind = sequence->kind();
  const Frontend frontend = sequence->frontend();
  absl::Status refusal;
  int depth = 0;
  RequestHandle handle = 0;
  {
    absl::MutexLock lock(&mutex_);
    // 64-bit: --max-queue may be INT_MAX.
    const int64_t capacity =
        int64_t{options_.max_queue} +
        (int64_t{num_slots_} - busy_slots_ - pinned_slots_);
    if (draining_ || stopping_) {
      refusal = absl::UnavailableError(
          "the server is shutting down and accepts no new requests");
    } else if (static_cast<int64_t>(queue_.size()) >= capacity) {
      refusal = absl::ResourceExhaustedError(absl::StrFormat(
          "the admission queue is full (%d requests waiting for %d busy "
          "slots of %d, --max-queue=%d); retry later",
          queue_.size(), busy_slots_ + pinned_slots_, num_slots_,
          options_.max_queue));
    } else {
      handle = next_handle_++;
      sequence->handle = handle;
      sequence->clock.arrival = absl::Now();
      live_.insert(handle);
      queue_.push_back(std::move(sequence));
      depth = static_cast<int>(queue_.size());
    }
  }
  if (!refusal.ok()) {
    observer_->OnRequestRejected(kind, frontend, refusal.code());
    return refusal;
  }
  observer_->OnRequestQueued(kind, depth);
  return handle;
}

void Scheduler::Cancel(RequestHandle handle) {
  absl::MutexLock lock(&mutex_);
  if (live_.contains(handle)) cancel_requests_.push_back(handle);
}

SchedulerStats Scheduler::Stats() const {
  absl::MutexLock lock(&mutex_);
  SchedulerStats stats;
  stats.num_slots = num_slots_;
  stats.busy_slots = busy_slots_;
  stats.free_slots = num_slots_ - busy_slots_ - pinned_slots_;
  stats.retained_slots = retained_slots_;
  stats.pinned_slots = pinned_slots_;
  stats.queued_requests = static_cast<int>(queue_.size());
  stats.draining = draining_;
  return stats;
}

std::vector<KeptState> Scheduler::KeptStates() const {
  absl::MutexLock lock(&mutex_);
  return kept_states_;
}

bool Scheduler::HasWorkLocked() const {
  return stopping_ || !queue_.empty() || busy_slots_ > 0 ||
         !cancel_requests_.empty();
}

bool Scheduler::IsIdleLocked() const {
  return queue_.empty() && busy_slots_ == 0;
}

bool Scheduler::IsIdleOrStoppingLocked() const {
  return IsIdleLocked() || stopping_;
}

int Scheduler::Drain(absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  draining_ = true;
  if (mutex_.AwaitWithTimeout(absl::Condition(this, &Scheduler::IsIdleLocked),
                              timeout)) {
    return 0;
  }
  const int left = static_cast<int>(queue_.size()) + busy_slots_;
  cut_short_ = true;
  mutex_.Await(absl::Condition(this, &Scheduler::IsIdleOrStoppingLocked));
  return left;
}

void Scheduler::Stop() {
  {
    absl::MutexLock lock(&mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------- the loop

void Scheduler::Loop() {
  while (true) {
    std::vector<RequestHandle> cancels;
    std::vector<std::unique_ptr<Sequence>> dropped;  // left the queue early
    std::vector<std::unique_ptr<Sequence>> admitted;
    bool cut_short = false;
    bool stopping = false;
    absl::Time now;
    {
      absl::MutexLock lock(&mutex_);
      mutex_.Await(absl::Condition(this, &Scheduler::HasWorkLocked));
      now = absl::Now();
      stopping = stopping_;
      cut_short = cut_short_;
      cancels.swap(cancel_requests_);
      const std::unordered_set<RequestHandle> cancelled(cancels.begin(),
                                                        cancels.end());
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (stopping || cut_short || cancelled.contains((*it)->handle) ||
            (*it)->deadline() <= now) {
          live_.erase((*it)->handle);
          dropped.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      TakeAdmissionsLocked(admitted);
    }

    // 1. Reap.
    for (std::unique_ptr<Sequence>& sequence : dropped) {
      if (stopping) {
        Fail(*sequence, absl::UnavailableError("the server stopped"));
      } else if (cut_short) {
        CutShort(*sequence);
      } else if (sequence->deadline() <= now) {
        Fail(*sequence, absl::DeadlineExceededError(
                            "the deadline passed while the request waited "
                            "for a slot"));
      } else {
        Fail(*sequence, absl::CancelledError("cancelled by the client"));
      }
    }
    const std::unordered_set<RequestHandle> cancelled(cancels.begin(),
                                                      cancels.end());
    for (std::unique_ptr<Sequence>& sequence : slots_) {
      if (sequence == nullptr || sequence->state == SlotState::kFinished) {
        continue;
      }
      if (stopping) {
        Fail(*sequence, absl::UnavailableError("the server stopped"));
      } else if (cancelled.contains(sequence->handle)) {
        Fail(*sequence, absl::CancelledError("cancelled by the client"));
      } else if (sequence->deadline() <= now) {
        Fail(*sequence, absl::DeadlineExceededError(absl::StrFormat(
                            "the deadline passed after %d generated tokens",
                            sequence->generated())));
      } else if (cut_short) {
        CutShort(*sequence);
      }
    }
    if (stopping) {
      for (std::unique_ptr<Sequence>& sequence : admitted) {
        Fail(*sequence, absl::UnavailableError("the server stopped"));
      }
      admitted.clear();
      ReleaseFinished();
      absl::MutexLock lock(&mutex_);
      busy_slots_ = 0;
      return;
    }

    // 2. Admit.
    for (std::unique_ptr<Sequence>& sequence : admitted) {
      AdmitSequence(std::move(sequence));
    }

    // 3-5. Plan, run, emit.
    const BatchPlan plan = PlanStep(SlotViews(), options_.batch);
    if (!plan.decode_slots.empty()) RunDecode(plan.decode_slots);
    for (const PrefillChunk& chunk : plan.prefill_chunks) RunPrefill(chunk);

    // 6. Release.
    ReleaseFinished();
  }
}

std::vector<SlotView> Scheduler::SlotViews() const {
  std::vector<SlotView> views;
  for (const std::unique_ptr<Sequence>& sequence : slots_) {
    if (sequence == nullptr) continue;
    SlotView view;
    view.slot = sequence->slot;
    view.state = sequence->state;
    view.prefill_tokens_left =
        static_cast<int64_t>(sequence->tokens().size()) - sequence->prefilled;
    view.admission_order = sequence->admission_order;
    views.push_back(view);
  }
  return views;
}

void Scheduler::TakeAdmissionsLocked(
    std::vector<std::unique_ptr<Sequence>>& admitted) {
  while (!queue_.empty()) {
    Sequence& next = *queue_.front();
    // Oldest first: the head waits for a running request to end; when none
    // runs, no slot will ever come, and Admit says why.
    const StartFrom start = SlotStart(next.start_from());
    if (!slot_manager_.CanAdmit(start) &&
        slot_manager_.CountIn(SlotLife::kRunning) > 0) {
      break;
    }
    next.admission = slot_manager_.Admit(next.handle, start);
    if (next.admission.ok()) ++busy_slots_;
    admitted.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  retained_slots_ = slot_manager_.CountIn(SlotLife::kRetained);
  pinned_slots_ = slot_manager_.CountIn(SlotLife::kPinned);
}

template <typename Operation>
decltype(auto) Scheduler::RunJob(Sequence& sequence, Operation&& operation) {
  const auto report = [this, &sequence](absl::StatusCode code,
                                        FinishReason reason) {
    // A job reports its success just before telling its sink: the state is
    // final here, and saved before anyone hears of the end. A generation
    // cut short at a drain saves its state up to its last token (every
    // token it generated reached its sink) when it generated any; before
    // its first token its prompt is not fully absorbed, and nothing is
    // saved.
    if (code == absl::StatusCode::kOk &&
        (reason != FinishReason::kCancelled || sequence.generated() > 0)) {
      SaveState(sequence);
    }
    ReportOutcome(sequence, code, reason);
  };
  const JobContext context{.environment = job_environment_,
                           .observer = *observer_,
                           .frontend = sequence.frontend(),
                           .clock = sequence.clock,
                           .report_outcome = report};
  return std::visit(
      [&operation, &context](auto& job) -> decltype(auto) {
        return operation(job, context);
      },
      sequence.job);
}

void Scheduler::AdmitSequence(std::unique_ptr<Sequence> sequence) {
  Sequence& admitted = *sequence;
  admitted.clock.admitted = absl::Now();
  admitted.admission_order = next_admission_order_++;
  admitted.state = SlotState::kPrefilling;
  if (!admitted.admission.ok()) {
    observer_->OnRequestAdmitted(
        admitted.kind(), admitted.frontend(),
        Seconds(admitted.clock.admitted - admitted.clock.arrival));
    Fail(admitted, admitted.admission.status());
    unslotted_.push_back(std::move(sequence));
    return;
  }
  const SlotAdmission& admission = *admitted.admission;
  if (admission.evicted_key.has_value()) {
    observer_->OnKeptStateEvicted(*admission.evicted_key);
  }
  const int slot = admission.slot;
  slots_[slot] = std::move(sequence);
  admitted.slot = slot;
  observer_->OnRequestAdmitted(
      admitted.kind(), admitted.frontend(),
      Seconds(admitted.clock.admitted - admitted.clock.arrival));
  absl::Status prepared;
  const StartFrom& start = admitted.start_from();
  switch (admission.mode) {
    case StartFrom::Mode::kEmpty:
      if (start.mode == StartFrom::Mode::kImport && start.saved != nullptr) {
        if (absl::Status status = pool_.Import(slot, *start.saved);
            !status.ok()) {
          prepared = Annotate(status, "importing the saved state");
        }
      } else if (absl::Status status = pool_.Reset(slot); !status.ok()) {
        prepared = Annotate(status, "resetting the state slot");
      }
      break;
    case StartFrom::Mode::kImport:
      break;  // SlotStart never asks SlotManager for it
    case StartFrom::Mode::kContinue:
      break;  // the kept state, as it is
    case StartFrom::Mode::kCopy:
      if (absl::Status status = pool_.Copy(admission.copy_from, slot);
          !status.ok()) {
        prepared = Annotate(
            status, absl::StrFormat("copying the state kept under \"%s\"",
                                    admitted.start_from().key));
      }
      break;
  }
  if (!prepared.ok()) {
    Fail(admitted, prepared);
    return;
  }
  RunJob(admitted,
         [](auto& job, const JobContext& context) { job.Start(context); });
}

void Scheduler::RunDecode(const std::vector<int>& decode_slots) {
  std::vector<int32_t> tokens;
  tokens.reserve(decode_slots.size());
  for (int slot : decode_slots) {
    tokens.push_back(std::visit(
        [](const auto& job) { return job.decode_input(); }, slots_[slot]->job));
  }
  const absl::Time start = absl::Now();
  const absl::Status status =
      engine_.DecodeStep(pool_, decode_slots, tokens, &logprob_rows_);
  observer_->OnStep(StepPhase::kDecode, static_cast<int>(decode_slots.size()),
                    static_cast<int>(decode_slots.size()),
                    Seconds(absl::Now() - start));
  if (!status.ok()) {
    observer_->OnEngineError(StepPhase::kDecode, status);
    const absl::Status failure = Annotate(status, "decode step failed");
    for (int slot : decode_slots) Fail(*slots_[slot], failure);
    return;
  }
  const std::span<const float> rows(logprob_rows_);
  for (size_t i = 0; i < decode_slots.size(); ++i) {
    Sequence& sequence = *slots_[decode_slots[i]];
    const std::span<const float> row = rows.subspan(i * n_vocab_, n_vocab_);
    AfterStep(sequence,
              RunJob(sequence, [row](auto& job, const JobContext& context) {
                return job.AfterDecode(context, row);
              }));
  }
}

void Scheduler::RunPrefill(const PrefillChunk& chunk) {
  Sequence& sequence = *slots_[chunk.slot];
  const std::vector<int32_t>& tokens = sequence.tokens();
  const int64_t first = sequence.prefilled;
  const int64_t total = static_cast<int64_t>(tokens.size());
  const bool last_chunk = first + chunk.num_tokens == total;
  const runtime::LogprobRows rows = std::visit(
      [last_chunk](const auto& job) { return job.PrefillRows(last_chunk); },
      sequence.job);
  const std::span<const int32_t> input =
      std::span<const int32_t>(tokens).subspan(first, chunk.num_tokens);
  const absl::Time start = absl::Now();
  const absl::Status status =
      engine_.Prefill(pool_, chunk.slot, input, rows, &logprob_rows_);
  observer_->OnStep(StepPhase::kPrefill, 1, chunk.num_tokens,
                    Seconds(absl::Now() - start));
  observer_->OnPrefillTokens(sequence.frontend(), chunk.num_tokens);
  if (!status.ok()) {
    observer_->OnEngineError(StepPhase::kPrefill, status);
    Fail(sequence, Annotate(status, "prefill failed"));
    return;
  }
  sequence.prefilled += chunk.num_tokens;
  const std::span<const float> logprobs(logprob_rows_);
  const int num_tokens = chunk.num_tokens;
  AfterStep(sequence,
            RunJob(sequence, [&](auto& job, const JobContext& context) {
              return job.AfterPrefill(context, logprobs, first, num_tokens,
                                      last_chunk);
            }));
}

void Scheduler::AfterStep(Sequence& sequence,
                          const absl::StatusOr<SlotState>& next) {
  if (!next.ok()) {
    Fail(sequence, next.status());
    return;
  }
  sequence.state = *next;
  if (*next == SlotState::kFinished) sequence.completed = true;
}

void Scheduler::CutShort(Sequence& sequence) {
  sequence.state = SlotState::kFinished;
  RunJob(sequence,
         [](auto& job, const JobContext& context) { job.CutShort(context); });
}

void Scheduler::Fail(Sequence& sequence, const absl::Status& status) {
  sequence.state = SlotState::kFinished;
  ReportOutcome(sequence, status.code(), FinishReason::kUnspecified);
  std::visit([&status](auto& job) { job.Fail(status); }, sequence.job);
}

void Scheduler::ReportOutcome(const Sequence& sequence, absl::StatusCode code,
                              FinishReason reason) {
  const absl::Time now = absl::Now();
  const RequestClock& clock = sequence.clock;
  RequestOutcome outcome;
  outcome.kind = sequence.kind();
  outcome.frontend = sequence.frontend();
  outcome.status_code = code;
  outcome.finish_reason = reason;
  outcome.prompt_tokens = static_cast<int>(sequence.tokens().size());
  outcome.generated_tokens = sequence.generated();
  const bool admitted = clock.admitted != absl::InfinitePast();
  if (admitted) {
    outcome.queue_seconds = Seconds(clock.admitted - clock.arrival);
    const absl::Time prefill_end =
        clock.first_token != absl::InfinitePast() ? clock.first_token : now;
    outcome.prefill_seconds = Seconds(prefill_end - clock.admitted);
  }
  if (clock.first_token != absl::InfinitePast()) {
    outcome.decode_seconds = Seconds(now - clock.first_token);
  }
  outcome.total_seconds = Seconds(now - clock.arrival);
  observer_->OnRequestFinished(outcome);
}

void Scheduler::SaveState(const Sequence& sequence) {
  const std::shared_ptr<StateReceiver>& receiver = sequence.keep().save_to;
  if (receiver == nullptr || sequence.slot < 0) return;
  absl::StatusOr<std::string> bytes = pool_.Export(sequence.slot);
  if (!bytes.ok()) {
    receiver->OnStateSaved(Annotate(bytes.status(), "saving the state"));
    return;
  }
  SavedState saved;
  saved.bytes = *std::move(bytes);
  saved.position = pool_.position(sequence.slot);
  saved.pending_token = sequence.pending_token();
  receiver->OnStateSaved(std::move(saved));
}

void Scheduler::ReleaseFinished() {
  std::vector<RequestHandle> ended;
  for (std::unique_ptr<Sequence>& sequence : slots_) {
    if (sequence == nullptr || sequence->state != SlotState::kFinished) {
      continue;
    }
    ended.push_back(sequence->handle);
    const KeepState& keep = sequence->keep();
    // Only a request that completed keeps its state. Retain refuses a key
    // whose state another request is continuing in place; the state is
    // then dropped (one request per key is the caller's rule).
    if (!sequence->completed || keep.key.empty() ||
        !slot_manager_
             .Retain(sequence->slot, keep.key, keep.pinned,
                     sequence->pending_token())
             .ok()) {
      // Cannot fail: the slot was admitted and is running.
      slot_manager_.Release(sequence->slot).IgnoreError();
    }
    sequence.reset();
  }
  for (const std::unique_ptr<Sequence>& sequence : unslotted_) {
    ended.push_back(sequence->handle);
  }
  unslotted_.clear();
  SchedulerStats stats;
  {
    absl::MutexLock lock(&mutex_);
    busy_slots_ = slot_manager_.CountIn(SlotLife::kRunning);
    retained_slots_ = slot_manager_.CountIn(SlotLife::kRetained);
    pinned_slots_ = slot_manager_.CountIn(SlotLife::kPinned);
    if (retained_slots_ + pinned_slots_ > 0 || !kept_states_.empty()) {
      kept_states_ = slot_manager_.Kept();
    }
    for (RequestHandle handle : ended) live_.erase(handle);
    stats.busy_slots = busy_slots_;
    stats.queued_requests = static_cast<int>(queue_.size());
  }
  observer_->OnOccupancy(stats.busy_slots, num_slots_, stats.queued_requests);
}

}  // namespace tvq::scheduler
