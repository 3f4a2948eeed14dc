#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "server/engine/sampler.h"
#include "server/text/incremental_detokenizer.h"
#include "server/text/stop_sequence_matcher.h"

namespace tvq::scheduler {

struct Scheduler::Sequence {
  RequestKind kind = RequestKind::kGenerate;
  RequestHandle handle = 0;
  GenerationRequest generation;  // kGenerate
  ScoreRequest score;            // kScore
  std::shared_ptr<TokenSink> token_sink;
  std::shared_ptr<ScoreSink> score_sink;

  absl::Time arrival = absl::Now();
  absl::Time admitted = absl::InfinitePast();
  absl::Time first_token = absl::InfinitePast();
  absl::Time last_token = absl::InfinitePast();

  int slot = -1;
  SlotState state = SlotState::kIdle;
  uint64_t admission_order = 0;
  // Tokens of tokens() already fed to the model.
  int64_t prefilled = 0;

  // Generation.
  std::unique_ptr<runtime::Sampler> sampler;
  std::unique_ptr<runtime::IncrementalDetokenizer> detokenizer;
  std::unique_ptr<runtime::StopSequenceMatcher> stops;
  int32_t next_input = -1;
  int generated = 0;

  // Score.
  ScoreResult score_result;

  const std::vector<int32_t>& tokens() const {
    return kind == RequestKind::kGenerate ? generation.prompt : score.tokens;
  }
  absl::Time deadline() const {
    return kind == RequestKind::kGenerate ? generation.deadline
                                          : score.deadline;
  }
  const std::string& request_id() const {
    return kind == RequestKind::kGenerate ? generation.request_id
                                          : score.request_id;
  }
};

namespace {

double Seconds(absl::Duration duration) {
  return absl::ToDoubleSeconds(duration);
}

absl::Status CheckTokens(const std::vector<int32_t>& tokens, int n_vocab,
                         const char* what) {
  return runtime::CheckTokenIds(tokens, n_vocab, what);
}

// Keeps the code, prefixes the message with what failed.
absl::Status Annotate(const absl::Status& status, std::string_view what) {
  return absl::Status(status.code(),
                      absl::StrFormat("%s: %s", what, status.message()));
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
      tokenizer_(tokenizer),
      options_(options),
      observer_(observer != nullptr ? observer : &default_observer_),
      num_slots_(pool.num_slots()),
      n_vocab_(engine.config().n_vocab),
      eos_id_(engine.config().eos_id),
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
  auto sequence = std::make_unique<Sequence>();
  sequence->kind = RequestKind::kGenerate;
  sequence->generation = std::move(request);
  sequence->token_sink = std::move(sink);
  return Enqueue(std::move(sequence));
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
  auto sequence = std::make_unique<Sequence>();
  sequence->kind = RequestKind::kScore;
  sequence->score = std::move(request);
  sequence->score_sink = std::move(sink);
  return Enqueue(std::move(sequence));
}

absl::StatusOr<RequestHandle> Scheduler::Enqueue(
    std::unique_ptr<Sequence> sequence) {
  const RequestKind kind = sequence->kind;
  absl::Status refusal;
  int depth = 0;
  RequestHandle handle = 0;
  {
    absl::MutexLock lock(&mutex_);
    const int capacity = options_.max_queue + (num_slots_ - busy_slots_);
    if (draining_ || stopping_) {
      refusal = absl::UnavailableError(
          "the server is shutting down and accepts no new requests");
    } else if (static_cast<int>(queue_.size()) >= capacity) {
      refusal = absl::ResourceExhaustedError(absl::StrFormat(
          "the admission queue is full (%d requests waiting for %d busy "
          "slots, --max-queue=%d); retry later",
          queue_.size(), num_slots_, options_.max_queue));
    } else {
      handle = next_handle_++;
      sequence->handle = handle;
      sequence->arrival = absl::Now();
      live_.insert(handle);
      queue_.push_back(std::move(sequence));
      depth = static_cast<int>(queue_.size());
    }
  }
  if (!refusal.ok()) {
    observer_->OnRequestRejected(kind, refusal.code());
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
  stats.free_slots = num_slots_ - busy_slots_;
  stats.queued_requests = static_cast<int>(queue_.size());
  stats.draining = draining_;
  return stats;
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
      while (!queue_.empty() && busy_slots_ < num_slots_) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
        ++busy_slots_;
      }
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
                            sequence->generated)));
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

void Scheduler::AdmitSequence(std::unique_ptr<Sequence> sequence) {
  int slot = 0;
  while (slots_[slot] != nullptr) ++slot;  // busy_slots_ < num_slots_ holds
  Sequence& admitted = *sequence;
  slots_[slot] = std::move(sequence);
  admitted.slot = slot;
  admitted.admitted = absl::Now();
  admitted.admission_order = next_admission_order_++;
  admitted.state = SlotState::kPrefilling;
  observer_->OnRequestAdmitted(admitted.kind,
                               Seconds(admitted.admitted - admitted.arrival));
  if (absl::Status status = pool_.Reset(slot); !status.ok()) {
    Fail(admitted, Annotate(status, "resetting the state slot"));
    return;
  }
  if (admitted.kind == RequestKind::kGenerate) {
    const GenerationRequest& request = admitted.generation;
    admitted.sampler =
        std::make_unique<runtime::Sampler>(request.sampling, n_vocab_);
    admitted.sampler->ObservePrompt(request.prompt);
    admitted.detokenizer =
        std::make_unique<runtime::IncrementalDetokenizer>(tokenizer_);
    admitted.stops =
        std::make_unique<runtime::StopSequenceMatcher>(request.stop_sequences);
  }
}

void Scheduler::RunDecode(const std::vector<int>& decode_slots) {
  std::vector<int32_t> tokens;
  tokens.reserve(decode_slots.size());
  for (int slot : decode_slots) tokens.push_back(slots_[slot]->next_input);
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
    EmitToken(*slots_[decode_slots[i]], rows.subspan(i * n_vocab_, n_vocab_));
  }
}

void Scheduler::RunPrefill(const PrefillChunk& chunk) {
  Sequence& sequence = *slots_[chunk.slot];
  const std::vector<int32_t>& tokens = sequence.tokens();
  const int64_t first = sequence.prefilled;
  const int64_t total = static_cast<int64_t>(tokens.size());
  const bool last_chunk = first + chunk.num_tokens == total;
  const bool score = sequence.kind == RequestKind::kScore;
  runtime::LogprobRows rows = runtime::LogprobRows::kNone;
  if (score) {
    rows = runtime::LogprobRows::kAll;
  } else if (last_chunk) {
    rows = runtime::LogprobRows::kLast;
  }
  const std::span<const int32_t> input =
      std::span<const int32_t>(tokens).subspan(first, chunk.num_tokens);
  const absl::Time start = absl::Now();
  const absl::Status status =
      engine_.Prefill(pool_, chunk.slot, input, rows, &logprob_rows_);
  observer_->OnStep(StepPhase::kPrefill, 1, chunk.num_tokens,
                    Seconds(absl::Now() - start));
  observer_->OnPrefillTokens(chunk.num_tokens);
  if (!status.ok()) {
    observer_->OnEngineError(StepPhase::kPrefill, status);
    Fail(sequence, Annotate(status, "prefill failed"));
    return;
  }
  sequence.prefilled += chunk.num_tokens;
  const std::span<const float> logprobs(logprob_rows_);

  if (score) {
    const int top = sequence.score.top_logprobs;
    ScoreResult& result = sequence.score_result;
    for (int i = 0; i < chunk.num_tokens; ++i) {
      const int64_t position = first + i;
      if (position + 1 >= total) break;
      const std::span<const float> row =
          logprobs.subspan(static_cast<size_t>(i) * n_vocab_, n_vocab_);
      TokenLogprob entry;
      entry.token_id = tokens[position + 1];
      entry.logprob = row[entry.token_id];
      if (top > 0) runtime::TopAlternatives(row, top, &entry.top_alternatives);
      result.total_logprob += entry.logprob;
      result.token_logprobs.push_back(std::move(entry));
    }
    if (last_chunk) FinishScore(sequence);
    return;
  }
  if (last_chunk) {
    sequence.state = SlotState::kDecoding;
    EmitToken(sequence, logprobs.subspan(0, n_vocab_));
  }
}

void Scheduler::EmitToken(Sequence& sequence, std::span<const float> row) {
  const GenerationRequest& request = sequence.generation;
  absl::StatusOr<int32_t> sampled =
      sequence.sampler->Sample(row, static_cast<uint64_t>(sequence.generated));
  if (!sampled.ok()) {
    Fail(sequence, Annotate(sampled.status(), "sampling failed"));
    return;
  }
  const int32_t token = *sampled;
  const absl::Time now = absl::Now();
  ++sequence.generated;
  if (sequence.generated == 1) {
    sequence.first_token = now;
    observer_->OnFirstToken(Seconds(now - sequence.arrival));
  } else {
    observer_->OnToken(Seconds(now - sequence.last_token));
  }
  sequence.last_token = now;

  TokenUpdate update;
  update.token_ids.push_back(token);
  if (request.logprobs || request.top_logprobs > 0) {
    TokenLogprob entry;
    entry.token_id = token;
    entry.logprob = row[token];
    runtime::TopAlternatives(row, request.top_logprobs,
                             &entry.top_alternatives);
    update.logprobs.push_back(std::move(entry));
  }

  FinishReason reason = FinishReason::kUnspecified;
  std::string matched_stop_sequence;
  int32_t matched_stop_token_id = -1;
  if (!request.ignore_eos && token == eos_id_) {
    reason = FinishReason::kEos;
    matched_stop_token_id = token;
  } else if (std::find(request.stop_token_ids.begin(),
                       request.stop_token_ids.end(),
                       token) != request.stop_token_ids.end()) {
    reason = FinishReason::kStopToken;
    matched_stop_token_id = token;
  } else {
    absl::StatusOr<std::string> text = sequence.detokenizer->Append(token);
    if (!text.ok()) {
      Fail(sequence, Annotate(text.status(), "detokenizing"));
      return;
    }
    runtime::StopSequenceMatcher::Result matched = sequence.stops->Append(*text);
    update.text = std::move(matched.released);
    if (matched.matched) {
      reason = FinishReason::kStopSequence;
      matched_stop_sequence = std::move(matched.stop_sequence);
    }
  }
  if (reason == FinishReason::kUnspecified &&
      sequence.generated >= request.max_new_tokens) {
    reason = FinishReason::kLength;
  }
  if (reason == FinishReason::kUnspecified) {
    sequence.next_input = token;
    sequence.token_sink->OnTokens(std::move(update));
    return;
  }
  FinishGeneration(sequence, reason, std::move(update),
                   std::move(matched_stop_sequence), matched_stop_token_id);
}

void Scheduler::FinishGeneration(Sequence& sequence, FinishReason reason,
                                 TokenUpdate update,
                                 std::string matched_stop_sequence,
                                 int32_t matched_stop_token_id) {
  if (reason != FinishReason::kStopSequence && sequence.stops != nullptr) {
    // Whatever the detokenizer and the matcher hold back is final now (it
    // may still complete a stop sequence).
    runtime::StopSequenceMatcher::Result matched =
        sequence.stops->Append(sequence.detokenizer->Finish());
    update.text += matched.released;
    if (matched.matched) {
      if (reason != FinishReason::kCancelled) {
        reason = FinishReason::kStopSequence;
        matched_stop_token_id = -1;
      }
      matched_stop_sequence = std::move(matched.stop_sequence);
    } else {
      update.text += sequence.stops->Flush();
    }
  }
  const absl::Time now = absl::Now();
  Completion completion;
  completion.finish_reason = reason;
  completion.matched_stop_sequence = std::move(matched_stop_sequence);
  completion.matched_stop_token_id = matched_stop_token_id;
  Usage& usage = completion.usage;
  usage.prompt_tokens = static_cast<int>(sequence.generation.prompt.size());
  usage.generated_tokens = sequence.generated;
  if (sequence.admitted != absl::InfinitePast()) {
    usage.queue_time_seconds = Seconds(sequence.admitted - sequence.arrival);
  } else {
    usage.queue_time_seconds = Seconds(now - sequence.arrival);
  }
  if (sequence.first_token != absl::InfinitePast()) {
    usage.time_to_first_token_seconds =
        Seconds(sequence.first_token - sequence.arrival);
  }
  usage.total_time_seconds = Seconds(now - sequence.arrival);
  sequence.state = SlotState::kFinished;
  ReportOutcome(sequence, absl::StatusCode::kOk, reason);
  sequence.token_sink->OnFinished(std::move(update), completion);
}

void Scheduler::FinishScore(Sequence& sequence) {
  const absl::Time now = absl::Now();
  ScoreResult& result = sequence.score_result;
  result.usage.prompt_tokens = static_cast<int>(sequence.score.tokens.size());
  result.usage.queue_time_seconds =
      Seconds(sequence.admitted - sequence.arrival);
  result.usage.total_time_seconds = Seconds(now - sequence.arrival);
  sequence.state = SlotState::kFinished;
  ReportOutcome(sequence, absl::StatusCode::kOk, FinishReason::kUnspecified);
  sequence.score_sink->OnScored(std::move(result));
}

void Scheduler::CutShort(Sequence& sequence) {
  if (sequence.kind == RequestKind::kScore) {
    Fail(sequence, absl::UnavailableError(
                       "the server shut down before the score was complete"));
    return;
  }
  FinishGeneration(sequence, FinishReason::kCancelled, TokenUpdate{}, "", -1);
}

void Scheduler::Fail(Sequence& sequence, const absl::Status& status) {
  sequence.state = SlotState::kFinished;
  ReportOutcome(sequence, status.code(), FinishReason::kUnspecified);
  if (sequence.kind == RequestKind::kGenerate) {
    sequence.token_sink->OnFailed(status);
  } else {
    sequence.score_sink->OnFailed(status);
  }
}

void Scheduler::ReportOutcome(const Sequence& sequence, absl::StatusCode code,
                              FinishReason reason) {
  const absl::Time now = absl::Now();
  RequestOutcome outcome;
  outcome.kind = sequence.kind;
  outcome.status_code = code;
  outcome.finish_reason = reason;
  outcome.prompt_tokens = static_cast<int>(sequence.tokens().size());
  outcome.generated_tokens = sequence.generated;
  const bool admitted = sequence.admitted != absl::InfinitePast();
  if (admitted) {
    outcome.queue_seconds = Seconds(sequence.admitted - sequence.arrival);
    const absl::Time prefill_end = sequence.first_token != absl::InfinitePast()
                                       ? sequence.first_token
                                       : now;
    outcome.prefill_seconds = Seconds(prefill_end - sequence.admitted);
  }
  if (sequence.first_token != absl::InfinitePast()) {
    outcome.decode_seconds = Seconds(now - sequence.first_token);
  }
  outcome.total_seconds = Seconds(now - sequence.arrival);
  observer_->OnRequestFinished(outcome);
}

void Scheduler::ReleaseFinished() {
  std::vector<RequestHandle> ended;
  for (std::unique_ptr<Sequence>& sequence : slots_) {
    if (sequence != nullptr && sequence->state == SlotState::kFinished) {
      ended.push_back(sequence->handle);
      sequence.reset();
    }
  }
  SchedulerStats stats;
  {
    absl::MutexLock lock(&mutex_);
    busy_slots_ -= static_cast<int>(ended.size());
    for (RequestHandle handle : ended) live_.erase(handle);
    stats.busy_slots = busy_slots_;
    stats.queued_requests = static_cast<int>(queue_.size());
  }
  observer_->OnOccupancy(stats.busy_slots, num_slots_, stats.queued_requests);
}

}  // namespace tvq::scheduler
