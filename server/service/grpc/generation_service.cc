#include "server/service/grpc/generation_service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/model_info.h"
#include "server/core/score_summary.h"
#include "server/service/grpc/grpc_credentials.h"
#include "server/service/grpc/session_metadata.h"
#include "server/service/grpc/status_to_grpc.h"
#include "server/service/grpc/unary_call.h"
#include "server/text/incremental_detokenizer.h"

namespace tvq::service {
namespace {

// ---------------------------------------------------------------- protos

v1::FinishReason ToProto(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kUnspecified:
      return v1::FINISH_REASON_UNSPECIFIED;
    case scheduler::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case scheduler::FinishReason::kStopSequence:
      return v1::FINISH_REASON_STOP_SEQUENCE;
    case scheduler::FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case scheduler::FinishReason::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case scheduler::FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const scheduler::TokenLogprob& in, v1::TokenLogprob* out) {
  out->set_token_id(in.token_id);
  out->set_logprob(in.logprob);
  for (const runtime::TokenAlternative& alternative : in.top_alternatives) {
    v1::TopLogprob* top = out->add_top_logprobs();
    top->set_token_id(alternative.token_id);
    top->set_logprob(alternative.logprob);
  }
}

void ToProto(const scheduler::Usage& in, v1::Usage* out) {
  out->set_prompt_tokens(in.prompt_tokens);
  out->set_generated_tokens(in.generated_tokens);
  out->set_queue_time_seconds(in.queue_time_seconds);
  out->set_time_to_first_token_seconds(in.time_to_first_token_seconds);
  out->set_total_time_seconds(in.total_time_seconds);
  out->set_cached_tokens(in.cached_tokens);
}

// Appends an update's tokens, text and logprobs to a response message
// (GenerateResponse or GenerateStreamResponse).
template <typename Message>
void AppendUpdate(scheduler::TokenUpdate& update, Message* message) {
  for (int32_t id : update.token_ids) message->add_token_ids(id);
  message->mutable_text()->append(update.text);
  for (const scheduler::TokenLogprob& entry : update.logprobs) {
    ToProto(entry, message->add_logprobs());
  }
}

// About how many bytes an update adds to a message (the wire size, give or
// take the varints): what a stream's unsent output is measured in.
int64_t ApproximateBytes(const scheduler::TokenUpdate& update) {
  int64_t bytes = static_cast<int64_t>(update.text.size()) +
                  5 * static_cast<int64_t>(update.token_ids.size());
  for (const scheduler::TokenLogprob& entry : update.logprobs) {
    bytes += 12 + 12 * static_cast<int64_t>(entry.top_alternatives.size());
  }
  return bytes;
}

template <typename Message>
void SetCompletion(const scheduler::Completion& completion, Message* message) {
  message->set_finish_reason(ToProto(completion.finish_reason));
  message->set_matched_stop_sequence(completion.matched_stop_sequence);
  message->set_matched_stop_token_id(completion.matched_stop_token_id);
  ToProto(completion.usage, message->mutable_usage());
}

// The session a Generate or Score continues (none when `manager` is null).
struct SessionTarget {
  sessions::SessionManager* manager = nullptr;
  std::string session_id;
  bool no_eos_prefix = false;
  // Without a session: where automatic prefix reuse happens (when on).
  sessions::SessionManager* reuse = nullptr;
  // Who asks (sessions and retained prefixes are per API key).
  std::string caller;
};

template <typename Request>
SessionTarget TargetOf(const Request& request, core::Engine& engine,
                       std::string caller) {
  SessionTarget target;
  target.caller = std::move(caller);
  target.reuse = &engine.sessions();
  if (request.session_id().empty()) return target;
  target.manager = &engine.sessions();
  target.session_id = request.session_id();
  target.no_eos_prefix = request.no_eos_prefix();
  return target;
}

absl::StatusOr<scheduler::RequestHandle> SubmitGeneration(
    scheduler::Scheduler& scheduler, const SessionTarget& target,
    scheduler::GenerationRequest request,
    std::shared_ptr<scheduler::TokenSink> sink) {
  if (target.manager == nullptr) {
    if (target.reuse != nullptr) {
      return target.reuse->SubmitGenerationReusing(
          std::move(request), std::move(sink), target.caller);
    }
    return scheduler.SubmitGeneration(std::move(request), std::move(sink));
  }
  return target.manager->SubmitGeneration(
      target.session_id, target.no_eos_prefix, std::move(request),
      std::move(sink), target.caller);
}

// ---------------------------------------------------------------- calls

// A call reactor whose scheduler sink points back to it. gRPC is done with
// the reactor at OnDone, the scheduler only after the sink's last callback,
// and either can come last: a stream ended early for unread output still
// hears the scheduler's cancellation after OnDone, and a write completing on
// a gRPC thread can finish a stream while the scheduler thread is still
// inside its End. So the reactor is shared: gRPC's reference is dropped in
// OnDone (ReleaseGrpcReference), each sink holds another, and the last one
// deletes it.
template <typename Call>
class SharedWithScheduler {
 public:
  template <typename... Args>
  static Call* Create(Args&&... args) {
    std::shared_ptr<Call> call(new Call(std::forward<Args>(args)...));
    call->self_ = call;
    return call.get();
  }

 protected:
  // gRPC's reference, for a sink made before the call is returned to gRPC.
  std::shared_ptr<Call> Shared() const { return self_; }
  // From OnDone: may delete the call; touch nothing of it afterwards.
  void ReleaseGrpcReference() { std::shared_ptr<Call> last = std::move(self_); }

 private:
  std::shared_ptr<Call> self_;
};

// The scheduler handle of a call's request, for cancellation from gRPC's
// threads: a cancel that comes before the request is submitted (OnCancel can
// run while Start is still submitting) takes effect once it is.
class RequestCancellation {
 public:
  explicit RequestCancellation(scheduler::Scheduler* scheduler)
      : scheduler_(scheduler) {}

  void Submitted(scheduler::RequestHandle handle) {
    bool cancel = false;
    {
      absl::MutexLock lock(&mutex_);
      handle_ = handle;
      cancel = requested_;
    }
    if (cancel) scheduler_->Cancel(handle);
  }

  void Cancel() {
    scheduler::RequestHandle handle = 0;
    {
      absl::MutexLock lock(&mutex_);
      requested_ = true;
      handle = handle_;
    }
    if (handle != 0) scheduler_->Cancel(handle);
  }

 private:
  scheduler::Scheduler* const scheduler_;
  absl::Mutex mutex_;
  scheduler::RequestHandle handle_ ABSL_GUARDED_BY(mutex_) = 0;
  bool requested_ ABSL_GUARDED_BY(mutex_) = false;
};

// ---------------------------------------------------------------- Generate

// A unary Generate call. The scheduler's sink writes into the response
// (only the scheduler thread touches it until Finish).
class GenerateCall final : public grpc::ServerUnaryReactor,
                           public SharedWithScheduler<GenerateCall> {
 public:
  GenerateCall(scheduler::Scheduler* scheduler, v1::GenerateResponse* response,
               ActiveCallCounter* counter)
      : cancellation_(scheduler), scheduler_(scheduler), response_(response) {
    hold_.emplace(counter);
  }

  void Start(scheduler::GenerationRequest request,
             const SessionTarget& target) {
    response_->set_request_id(request.request_id);
    response_->set_seed(request.sampling.seed);
    absl::StatusOr<scheduler::RequestHandle> handle =
        SubmitGeneration(*scheduler_, target, std::move(request),
                         std::make_shared<Sink>(Shared()));
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    cancellation_.Submitted(*handle);
  }

  void OnCancel() override { cancellation_.Cancel(); }
  void OnDone() override {
    hold_.reset();
    ReleaseGrpcReference();
  }

 private:
  class Sink final : public scheduler::TokenSink {
   public:
    explicit Sink(std::shared_ptr<GenerateCall> call)
        : call_(std::move(call)) {}
    void OnTokens(scheduler::TokenUpdate update) override {
      AppendUpdate(update, call_->response_);
    }
    void OnFinished(scheduler::TokenUpdate update,
                    const scheduler::Completion& completion) override {
      AppendUpdate(update, call_->response_);
      SetCompletion(completion, call_->response_);
      call_->Finish(grpc::Status::OK);
    }
    void OnFailed(const absl::Status& status) override {
      call_->Finish(ToGrpcStatus(status));
    }

   private:
    const std::shared_ptr<GenerateCall> call_;
  };

  // Counts the call as active until OnDone.
  std::optional<ActiveCallCounter::Hold> hold_;
  RequestCancellation cancellation_;
  scheduler::Scheduler* const scheduler_;
  v1::GenerateResponse* const response_;
};

// ---------------------------------------------------------------- stream

// A GenerateStream call: a queue of pending messages guarded by a mutex, at
// most one write in flight, the next write started from OnWriteDone. The
// scheduler thread only enqueues.
class GenerateStreamCall final
    : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>,
      public SharedWithScheduler<GenerateStreamCall> {
 public:
  GenerateStreamCall(scheduler::Scheduler* scheduler,
                     ActiveCallCounter* counter,
                     int64_t max_pending_output_bytes)
      : cancellation_(scheduler),
        scheduler_(scheduler),
        max_pending_output_bytes_(max_pending_output_bytes) {
    hold_.emplace(counter);
  }

  void Start(scheduler::GenerationRequest request,
             const SessionTarget& target) {
    request_id_ = request.request_id;
    seed_ = request.sampling.seed;
    absl::StatusOr<scheduler::RequestHandle> handle =
        SubmitGeneration(*scheduler_, target, std::move(request),
                         std::make_shared<Sink>(Shared()));
    if (!handle.ok()) {
      End(ToGrpcStatus(handle.status()));
      return;
    }
    cancellation_.Submitted(*handle);
  }

  void OnWriteDone(bool ok) override {
    bool cancel = false;
    {
      absl::MutexLock lock(&mutex_);
      writing_ = false;
      if (!ok && !broken_) {
        // The client is gone: drop what is queued and stop generating.
        broken_ = true;
        pending_.clear();
        cancel = true;
      }
    }
    if (cancel) cancellation_.Cancel();
    Pump();
  }
  void OnCancel() override { cancellation_.Cancel(); }
  void OnDone() override {
    hold_.reset();
    ReleaseGrpcReference();
  }

 private:
  class Sink final : public scheduler::TokenSink {
   public:
    explicit Sink(std::shared_ptr<GenerateStreamCall> call)
        : call_(std::move(call)) {}
    void OnTokens(scheduler::TokenUpdate update) override {
      call_->Push(update, nullptr);
    }
    void OnFinished(scheduler::TokenUpdate update,
                    const scheduler::Completion& completion) override {
      call_->Push(update, &completion);
      call_->End(grpc::Status::OK);
    }
    void OnFailed(const absl::Status& status) override {
      call_->End(ToGrpcStatus(status));
    }

   private:
    const std::shared_ptr<GenerateStreamCall> call_;
  };

  // Queues a message. Queued messages are never in flight, so a new update
  // merges into the last queued one: a slow client gets fewer, larger
  // messages. Output the client leaves unread is bounded: past
  // max_pending_output_bytes_ the request is cancelled (its slot freed),
  // what is queued dropped, and the stream ends with RESOURCE_EXHAUSTED.
  void Push(scheduler::TokenUpdate& update,
            const scheduler::Completion* completion) {
    bool overflow = false;
    {
      absl::MutexLock lock(&mutex_);
      if (broken_ || ended_) return;
      if (pending_.empty()) {
        pending_.emplace_back();
        pending_.back().set_request_id(request_id_);
        pending_.back().set_seed(seed_);
        pending_bytes_ = 0;
      }
      pending_bytes_ += ApproximateBytes(update);
      if (completion == nullptr && pending_bytes_ > max_pending_output_bytes_) {
        overflow = true;
        broken_ = true;
        pending_.clear();
        pending_bytes_ = 0;
      } else {
        v1::GenerateStreamResponse& message = pending_.back();
        AppendUpdate(update, &message);
        if (completion != nullptr) SetCompletion(*completion, &message);
      }
    }
    if (overflow) {
      cancellation_.Cancel();
      EndNow(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrFormat(
              "the client did not read the stream: more than %d bytes of "
              "output waited to be sent (--max-pending-output-bytes); the "
              "request was stopped",
              max_pending_output_bytes_)));
      return;
    }
    Pump();
  }

  // Ends the call with `status` even though the stream is broken (the
  // scheduler's own OnFailed/OnFinished for it are ignored from now on).
  void EndNow(grpc::Status status) {
    {
      absl::MutexLock lock(&mutex_);
      ended_ = true;
      final_status_ = std::move(status);
      pending_.clear();
    }
    Pump();
  }

  // The call's end: whatever is queued is written first (when OK).
  void End(grpc::Status status) {
    {
      absl::MutexLock lock(&mutex_);
      if (ended_) return;  // already ended by EndNow
      ended_ = true;
      final_status_ = std::move(status);
      if (!final_status_.ok()) pending_.clear();
    }
    Pump();
  }

  // Starts the next write or the finish, if nothing is in flight.
  void Pump() {
    enum class Action { kNone, kWrite, kWriteAndFinish, kFinish };
    Action action = Action::kNone;
    grpc::Status status;
    {
      absl::MutexLock lock(&mutex_);
      if (writing_ || finish_started_) return;
      if (!pending_.empty()) {
        in_flight_ = std::move(pending_.front());
        pending_.pop_front();
        writing_ = true;
        if (pending_.empty() && ended_ && final_status_.ok()) {
          finish_started_ = true;
          status = final_status_;
          action = Action::kWriteAndFinish;
        } else {
          action = Action::kWrite;
        }
      } else if (ended_) {
        finish_started_ = true;
        status = final_status_;
        action = Action::kFinish;
      }
    }
    switch (action) {
      case Action::kNone:
        break;
      case Action::kWrite:
        StartWrite(&in_flight_);
        break;
      case Action::kWriteAndFinish:
        StartWriteAndFinish(&in_flight_, grpc::WriteOptions(), status);
        break;
      case Action::kFinish:
        Finish(status);
        break;
    }
  }

  // Counts the call as active until OnDone.
  std::optional<ActiveCallCounter::Hold> hold_;
  RequestCancellation cancellation_;
  scheduler::Scheduler* const scheduler_;
  std::string request_id_;
  uint64_t seed_ = 0;

  const int64_t max_pending_output_bytes_;

  absl::Mutex mutex_;
  std::deque<v1::GenerateStreamResponse> pending_ ABSL_GUARDED_BY(mutex_);
  // About the wire size of pending_ (ApproximateBytes).
  int64_t pending_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  // The message being written (stable until its OnWriteDone / OnDone).
  v1::GenerateStreamResponse in_flight_;
  bool writing_ ABSL_GUARDED_BY(mutex_) = false;
  bool broken_ ABSL_GUARDED_BY(mutex_) = false;
  bool ended_ ABSL_GUARDED_BY(mutex_) = false;
  bool finish_started_ ABSL_GUARDED_BY(mutex_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mutex_);
};

// ---------------------------------------------------------------- Score

class ScoreCall final : public grpc::ServerUnaryReactor,
                        public SharedWithScheduler<ScoreCall> {
 public:
  ScoreCall(const core::Engine* engine, v1::ScoreResponse* response,
            ActiveCallCounter* counter)
      : cancellation_(&engine->scheduler()),
        engine_(engine),
        scheduler_(&engine->scheduler()),
        response_(response) {
    hold_.emplace(counter);
  }

  void Start(scheduler::ScoreRequest request, const SessionTarget& target) {
    response_->set_request_id(request.request_id);
    absl::StatusOr<scheduler::RequestHandle> handle;
    if (target.manager == nullptr) {
      for (int32_t id : request.tokens) response_->add_token_ids(id);
      handle = scheduler_->SubmitScore(std::move(request),
                                       std::make_shared<Sink>(Shared()));
    } else {
      handle = target.manager->SubmitScore(
          target.session_id, target.no_eos_prefix, std::move(request),
          std::make_shared<Sink>(Shared()), target.caller);
    }
    if (!handle.ok()) {
      Finish(ToGrpcStatus(handle.status()));
      return;
    }
    cancellation_.Submitted(*handle);
  }

  void OnCancel() override { cancellation_.Cancel(); }
  void OnDone() override {
    hold_.reset();
    ReleaseGrpcReference();
  }

 private:
  class Sink final : public scheduler::ScoreSink {
   public:
    explicit Sink(std::shared_ptr<ScoreCall> call) : call_(std::move(call)) {}
    void OnScored(scheduler::ScoreResult result) override {
      call_->Complete(result);
    }
    void OnFailed(const absl::Status& status) override {
      call_->Finish(ToGrpcStatus(status));
    }

   private:
    const std::shared_ptr<ScoreCall> call_;
  };

  void Complete(const scheduler::ScoreResult& result) {
    if (response_->token_ids_size() == 0) {
      // In a session the scored sequence starts with the session's pending
      // token, which only the session layer knew.
      for (int32_t id : result.tokens) response_->add_token_ids(id);
    }
    for (const scheduler::TokenLogprob& entry : result.token_logprobs) {
      ToProto(entry, response_->add_token_logprobs());
    }
    response_->set_total_logprob(result.total_logprob);
    if (const core::ScoreSummary summary = engine_->Summarize(result);
        summary.bits_per_byte.has_value()) {
      response_->set_bits_per_byte(*summary.bits_per_byte);
    }
    ToProto(result.usage, response_->mutable_usage());
    Finish(grpc::Status::OK);
  }

  // Counts the call as active until OnDone.
  std::optional<ActiveCallCounter::Hold> hold_;
  RequestCancellation cancellation_;
  const core::Engine* const engine_;
  scheduler::Scheduler* const scheduler_;
  v1::ScoreResponse* const response_;
};

// A stream that ends at once with `status`.
class FailedStream final
    : public grpc::ServerWriteReactor<v1::GenerateStreamResponse> {
 public:
  explicit FailedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

// ---------------------------------------------------------------- service

void ActiveCallCounter::Add(int delta) {
  absl::MutexLock lock(&mutex_);
  count_ += delta;
}

int ActiveCallCounter::count() const {
  absl::MutexLock lock(&mutex_);
  return count_;
}

bool ActiveCallCounter::WaitUntilNone(absl::Time deadline) {
  absl::MutexLock lock(&mutex_);
  auto none = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return count_ == 0; };
  return mutex_.AwaitWithDeadline(absl::Condition(&none), deadline);
}

GenerationService::GenerationService(const core::Readiness* readiness,
                                     std::string server_version)
    : readiness_(readiness), server_version_(std::move(server_version)) {}

std::string GenerationService::Caller(
    const grpc::ServerContextBase& context) const {
  return ownership_.by_api_key ? CallerKeyOwner(context) : std::string();
}

grpc::ServerUnaryReactor* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
    v1::GenerateResponse* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForNewWork();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  AnnounceSession(context, *session_id);
  v1::GenerateRequest keyed;
  const v1::GenerateRequest& effective =
      WithSessionId(*request, *session_id, keyed);
  absl::StatusOr<scheduler::GenerationRequest> generation =
      ToGenerationRequest(effective, Validation(**model), RandomSeed());
  if (!generation.ok()) return FinishNow(context, generation.status());
  generation->deadline = Deadline(context);
  GenerateCall* call = GenerateCall::Create(&(*model)->scheduler(), response,
                                            &active_calls_);
  call->Start(*std::move(generation),
              TargetOf(effective, **model, Caller(*context)));
  return call;
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>*
GenerationService::GenerateStream(grpc::CallbackServerContext* context,
                                  const v1::GenerateRequest* request) {
  absl::StatusOr<core::Engine*> model = readiness_->ForNewWork();
  if (!model.ok()) return new FailedStream(ToGrpcStatus(model.status()));
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) {
    return new FailedStream(ToGrpcStatus(session_id.status()));
  }
  AnnounceSession(context, *session_id);
  v1::GenerateRequest keyed;
  const v1::GenerateRequest& effective =
      WithSessionId(*request, *session_id, keyed);
  absl::StatusOr<scheduler::GenerationRequest> generation =
      ToGenerationRequest(effective, Validation(**model), RandomSeed());
  if (!generation.ok()) {
    return new FailedStream(ToGrpcStatus(generation.status()));
  }
  generation->deadline = Deadline(context);
  GenerateStreamCall* call = GenerateStreamCall::Create(
      &(*model)->scheduler(), &active_calls_,
      (*model)->config().limits.max_pending_output_bytes);
  call->Start(*std::move(generation),
              TargetOf(effective, **model, Caller(*context)));
  return call;
}

grpc::ServerUnaryReactor* GenerationService::Score(
    grpc::CallbackServerContext* context, const v1::ScoreRequest* request,
    v1::ScoreResponse* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForNewWork();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  AnnounceSession(context, *session_id);
  v1::ScoreRequest keyed;
  const v1::ScoreRequest& effective =
      WithSessionId(*request, *session_id, keyed);
  absl::StatusOr<scheduler::ScoreRequest> score =
      ToScoreRequest(effective, Validation(**model));
  if (!score.ok()) return FinishNow(context, score.status());
  score->deadline = Deadline(context);
  ScoreCall* call = ScoreCall::Create(*model, response, &active_calls_);
  call->Start(*std::move(score),
              TargetOf(effective, **model, Caller(*context)));
  return call;
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(
    grpc::CallbackServerContext* context, const v1::TokenizeRequest* request,
    v1::TokenizeResponse* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::vector<int32_t>> tokens =
      TokenizeText(*request, Validation(**model));
  if (!tokens.ok()) return FinishNow(context, tokens.status());
  response->mutable_token_ids()->Add(tokens->begin(), tokens->end());
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::Detokenize(
    grpc::CallbackServerContext* context, const v1::DetokenizeRequest* request,
    v1::DetokenizeResponse* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  if (absl::Status status =
          ValidateDetokenizeRequest(*request, Validation(**model));
      !status.ok()) {
    return FinishNow(context, status);
  }
  // A whole sequence at once: the incremental detokenizer turns incomplete
  // or invalid bytes into U+FFFD, so the text is valid UTF-8.
  runtime::IncrementalDetokenizer detokenizer((*model)->tokenizer());
  std::string text;
  for (int32_t id : request->token_ids()) {
    absl::StatusOr<std::string> piece = detokenizer.Append(id);
    if (!piece.ok()) return FinishNow(context, piece.status());
    text += *piece;
  }
  text += detokenizer.Finish();
  response->set_text(std::move(text));
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(
    grpc::CallbackServerContext* context,
    const v1::GetModelInfoRequest* /*request*/,
    v1::GetModelInfoResponse* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  const core::ModelInfo info = (*model)->Info();
  const runtime::ModelConfig& config = info.config;
  v1::ModelConfig* out = response->mutable_model_config();
  out->set_d_model(config.d_model);
  out->set_d_k(config.d_k);
  out->set_d_v(config.d_v);
  out->set_n_head(config.n_head);
  out->set_n_code(config.n_code);
  out->set_n_layer(config.n_layer);
  out->set_n_vocab(config.n_vocab);
  out->set_block_len(config.block_len);
  out->set_mem_len(config.mem_len);
  out->set_agg_cache(config.agg_cache);
  out->set_pe_abs(config.pe_abs);
  out->set_pe_lam(config.pe_lam);
  out->set_e_tie(config.e_tie);
  out->set_e_preln(config.e_preln);
  out->set_e_scale(config.e_scale);
  out->set_eos_id(config.eos_id);
  out->set_pad_id(config.pad_id);
  out->set_unk_id(config.unk_id);
  response->set_model_path(info.path);
  response->set_weights_dtype(info.weights_dtype);
  response->set_served_weights_dtype(info.served_weights_dtype);
  response->set_state_dtype(info.state_dtype);
  response->set_num_parameters(info.num_parameters);
  response->set_tokenizer_kind(info.tokenizer_kind ==
                                       runtime::TokenizerKind::kByte
                                   ? v1::TOKENIZER_KIND_BYTE
                                   : v1::TOKENIZER_KIND_SENTENCEPIECE);
  response->set_vocab_size(info.vocab_size);
  response->set_state_bytes_per_sequence(info.state_bytes_per_sequence);
  response->set_num_slots(info.slots.num_slots);
  response->set_free_slots(info.slots.free_slots);
  response->set_busy_slots(info.slots.busy_slots);
  response->set_queued_requests(info.slots.queued_requests);
  response->set_backend(info.backend);
  response->set_device(info.device);
  response->set_server_version(server_version_);
  const core::RequestLimits& request_limits = info.limits;
  v1::ServerLimits* limits = response->mutable_limits();
  limits->set_max_new_tokens_limit(request_limits.max_new_tokens_limit);
  limits->set_default_max_new_tokens(
      std::min(request_limits.default_max_new_tokens,
               request_limits.max_new_tokens_limit));
  limits->set_max_prompt_tokens(request_limits.max_prompt_tokens);
  limits->set_max_queue(info.max_queue);
  limits->set_max_stop_sequences(request_limits.max_stop_sequences);
  limits->set_max_stop_sequence_bytes(request_limits.max_stop_sequence_bytes);
  limits->set_max_stop_token_ids(request_limits.max_stop_token_ids);
  limits->set_max_top_logprobs(request_limits.max_top_logprobs);
  limits->set_max_request_bytes(request_limits.max_request_bytes);
  limits->set_max_pending_output_bytes(request_limits.max_pending_output_bytes);
  limits->set_max_connections(request_limits.max_connections);
  limits->set_max_concurrent_streams(request_limits.max_concurrent_streams);
  limits->set_max_detokenize_tokens(request_limits.max_detokenize_tokens());
  limits->set_session_memory_bytes(info.session_config.memory_bytes);
  limits->set_max_sessions(info.sessions.capacity);
  limits->set_session_default_ttl_seconds(
      info.session_config.default_ttl_seconds);
  limits->set_session_max_ttl_seconds(info.session_config.max_ttl_seconds);
  limits->set_max_sessions_per_key(info.session_config.max_per_key);
  return FinishNow(context, grpc::Status::OK);
}

}  // namespace tvq::service
