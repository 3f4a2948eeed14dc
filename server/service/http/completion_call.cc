#include "server/service/http/completion_call.h"

#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/service/http/completion_response.h"
#include "server/service/http/http_errors.h"
#include "server/sessions/session_manager.h"

namespace tvq::service::http {
namespace {

class CompletionCall final
    : public std::enable_shared_from_this<CompletionCall> {
 public:
  CompletionCall(std::shared_ptr<HttpExchange> exchange, core::Engine* engine,
                 CompletionPlan plan, std::string model_name)
      : exchange_(std::move(exchange)),
        engine_(engine),
        plan_(std::move(plan)),
        shaper_(plan_.kind,
                plan_.choices.front().request_id.substr(
                    0, plan_.choices.front().request_id.rfind('-')),
                absl::ToUnixSeconds(absl::Now()), std::move(model_name),
                &engine->tokenizer(), plan_.logprobs),
        choices_(plan_.choices.size()) {
    // Logprob offsets count from the start of the echoed prompt, whose
    // tokens come first when it is scored.
    for (Choice& choice : choices_) {
      choice.text_offset =
          plan_.score_prompt ? 0 : CountCharacters(plan_.echo_text);
    }
    prompt_tokens_ = static_cast<int>(plan_.choices.front().prompt.size());
  }

  void Start();

  // ---- on the strand (posted by the sinks)
  void OnTokens(int index, scheduler::TokenUpdate update);
  void OnFinished(int index, scheduler::TokenUpdate update,
                  const scheduler::Completion& completion);
  void OnFailed(int index, const absl::Status& status);
  void OnPromptScored(scheduler::ScoreResult result);
  void OnPromptScoreFailed(const absl::Status& status);

  HttpExchange& exchange() { return *exchange_; }

 private:
  struct Choice {
    scheduler::RequestHandle handle = 0;
    bool submitted = false;
    bool done = false;
    // Stream: whether a chunk of this choice went out already.
    bool started = false;
    int64_t text_offset = 0;
    // Unary: everything so far.
    ChoiceDelta output;
    scheduler::Completion completion;
    // n > 1 through a forked session: the temporary session this choice
    // generates on (closed when the choice ends); empty otherwise.
    std::string session_id;
  };

  // Queues one generation per choice (none for max_tokens 0); on an error
  // withdraws those already queued. With n > 1 the choices are submitted
  // later, once the prompt's session is ready (SubmitsLater).
  absl::Status SubmitGenerations();
  bool SubmitsLater() const {
    return plan_.generate && plan_.choices.size() >= 2;
  }
  // One independent generation per choice (n == 1, or the fallback).
  absl::Status SubmitIndependent();
  // Choice `index` as an independent generation.
  absl::StatusOr<scheduler::RequestHandle> SubmitOne(int index);
  // n > 1: the prompt's session is ready (or refused); forks it and submits
  // one generation per choice on its own session.
  void OnPromptSession(absl::StatusOr<sessions::SessionInfo> info);
  // Closes choice `index`'s temporary session, if any.
  void CloseSession(int index);
  void CloseAllSessions();
  // max_tokens 0: every choice ends at once with the echoed prompt.
  void FinishWithoutGenerating();
  void CancelAll();
  void OnClientGone();
  // Ends the exchange with `status` (an error): a reply (also for a stream
  // that has not started), or an error event.
  void Fail(const absl::Status& status);
  // Every choice is accepted: a stream starts now (idempotent).
  void StartStream();
  // Stream: sends one chunk of choice `index`.
  void SendChunk(int index, ChoiceDelta delta,
                 const scheduler::Completion* finish);
  void FinishIfDone();

  const std::shared_ptr<HttpExchange> exchange_;
  core::Engine* const engine_;
  const CompletionPlan plan_;
  const ResponseShaper shaper_;
  std::vector<Choice> choices_;
  int prompt_tokens_ = 0;
  // n > 1: the prompt tokens its session took from a retained state.
  int prompt_cached_tokens_ = 0;
  int finished_ = 0;
  // echo + logprobs: the prompt's score, running or done.
  bool scoring_ = false;
  scheduler::RequestHandle score_handle_ = 0;
  std::optional<PromptLogprobs> prompt_logprobs_;
  // The exchange has been answered (or abandoned); later events are dropped.
  bool ended_ = false;
  // Stream: the 200 and its headers went out. Not before every choice was
  // accepted by the scheduler, so that a refusal (429 queue full, 503
  // draining) is still an HTTP error, also for n > 1 and echo + logprobs.
  bool stream_started_ = false;
};

class ChoiceSink final : public scheduler::TokenSink {
 public:
  ChoiceSink(std::shared_ptr<CompletionCall> call, int index)
      : call_(std::move(call)), index_(index) {}

  void OnTokens(scheduler::TokenUpdate update) override {
    call_->exchange().Post(
        [call = call_, index = index_, update = std::move(update)]() mutable {
          call->OnTokens(index, std::move(update));
        });
  }
  void OnFinished(scheduler::TokenUpdate update,
                  const scheduler::Completion& completion) override {
    call_->exchange().Post([call = call_, index = index_,
                            update = std::move(update), completion]() mutable {
      call->OnFinished(index, std::move(update), completion);
    });
  }
  void OnFailed(const absl::Status& status) override {
    call_->exchange().Post([call = call_, index = index_, status] {
      call->OnFailed(index, status);
    });
  }

 private:
  const std::shared_ptr<CompletionCall> call_;
  const int index_;
};

class PromptScoreSink final : public scheduler::ScoreSink {
 public:
  explicit PromptScoreSink(std::shared_ptr<CompletionCall> call)
      : call_(std::move(call)) {}
  void OnScored(scheduler::ScoreResult result) override {
    call_->exchange().Post(
        [call = call_, result = std::move(result)]() mutable {
          call->OnPromptScored(std::move(result));
        });
  }
  void OnFailed(const absl::Status& status) override {
    call_->exchange().Post(
        [call = call_, status] { call->OnPromptScoreFailed(status); });
  }

 private:
  const std::shared_ptr<CompletionCall> call_;
};

void CompletionCall::Start() {
  const std::vector<int32_t>& prompt = plan_.choices.front().prompt;
  bool score_first = false;
  if (plan_.score_prompt) {
    prompt_logprobs_.emplace();
    prompt_logprobs_->first_token = prompt.front();
    score_first = prompt.size() >= 2;
  }
  absl::Status submitted = absl::OkStatus();
  if (score_first) {
    // The prompt's logprobs first (a score of the prompt); the generations
    // start once it is done, so that each choice's first chunk has them.
    scheduler::ScoreRequest score;
    score.request_id = shaper_.id() + "-prompt";
    score.frontend = scheduler::Frontend::kHttp;
    score.tokens = prompt;
    score.top_logprobs = plan_.top_logprobs;
    absl::StatusOr<scheduler::RequestHandle> handle =
        engine_->scheduler().SubmitScore(
            std::move(score),
            std::make_shared<PromptScoreSink>(shared_from_this()));
    if (handle.ok()) {
      score_handle_ = *handle;
      scoring_ = true;
    } else {
      submitted = handle.status();
    }
  } else {
    submitted = SubmitGenerations();
  }
  if (!submitted.ok()) {
    // Nothing is answered yet: the whole request fails (429 queue full,
    // 503 draining).
    ended_ = true;
    const ApiError error = ErrorFromStatus(submitted);
    exchange_->Reply(error.http_status, ErrorBody(error));
    return;
  }
  exchange_->OnClientGone(
      [self = shared_from_this()] { self->OnClientGone(); });
  // n == 1 has been accepted already; n > 1 (the prompt's session first)
  // and echo + logprobs (the prompt's score first) start their stream once
  // their generations are.
  const bool accepted = !score_first && !SubmitsLater();
  if (accepted) StartStream();
  if (!score_first && !plan_.generate) FinishWithoutGenerating();
}

void CompletionCall::StartStream() {
  if (!plan_.stream || stream_started_ || ended_) return;
  stream_started_ = true;
  exchange_->StartEventStream();
}

absl::Status CompletionCall::SubmitGenerations() {
  if (!plan_.generate) return absl::OkStatus();
  if (plan_.choices.size() < 2) return SubmitIndependent();
  // n > 1: the prompt is prefilled once into a temporary session holding all
  // of it but its last token (pending), which is forked once per further
  // choice; each choice then generates from its own copy with its own seed.
  // The plan's prompt has its eos prefix already.
  sessions::SessionManager::CreateParams params;
  params.prompt = plan_.choices.front().prompt;
  params.no_eos_prefix = true;
  // Pinned, so that its own forks cannot evict it (they may evict one
  // another when the budget is full: such a choice runs independently).
  params.pinned = true;
  // Starts from a retained state when one begins the prompt (automatic
  // prefix reuse, as n = 1 does).
  params.reuse_prefix = true;
  params.request_id = shaper_.id() + "-prompt";
  params.frontend = scheduler::Frontend::kHttp;
  params.deadline = plan_.choices.front().deadline;
  // The caller's own (prefix reuse is per key), never counted: these
  // sessions live only while the request runs.
  params.owner = exchange_->key_owner();
  params.counted = false;
  engine_->sessions().Create(
      std::move(params),
      [self = shared_from_this()](absl::StatusOr<sessions::SessionInfo> info) {
        self->exchange().Post([self, info = std::move(info)]() mutable {
          self->OnPromptSession(std::move(info));
        });
      });
  return absl::OkStatus();
}

void CompletionCall::CloseSession(int index) {
  Choice& choice = choices_[index];
  if (choice.session_id.empty()) return;
  (void)engine_->sessions().Close(choice.session_id, exchange_->key_owner());
  choice.session_id.clear();
}

void CompletionCall::CloseAllSessions() {
  for (size_t i = 0; i < choices_.size(); ++i) {
    CloseSession(static_cast<int>(i));
  }
}

void CompletionCall::OnPromptSession(
    absl::StatusOr<sessions::SessionInfo> info) {
  if (!info.ok()) {
    if (ended_) return;
    if (absl::IsResourceExhausted(info.status())) {
      // The session budget is full: n independent generations instead.
      if (absl::Status submitted = SubmitIndependent(); !submitted.ok()) {
        Fail(submitted);
        return;
      }
      StartStream();
      return;
    }
    Fail(info.status());
    return;
  }
  choices_.front().session_id = info->session_id;
  prompt_cached_tokens_ = static_cast<int>(info->cached_tokens);
  if (ended_) {
    // The client left (or the request failed) while the prompt was prefilled.
    CloseAllSessions();
    return;
  }
  for (size_t i = 1; i < choices_.size(); ++i) {
    absl::StatusOr<sessions::SessionInfo> fork =
        engine_->sessions().Fork(info->session_id, "", exchange_->key_owner(),
                                 /*counted=*/false);
    if (!fork.ok()) {
      // The budget is full: the choices left run independently.
      if (absl::IsResourceExhausted(fork.status())) break;
      CloseAllSessions();
      Fail(fork.status());
      return;
    }
    choices_[i].session_id = fork->session_id;
  }
  for (size_t i = 0; i < choices_.size(); ++i) {
    absl::StatusOr<scheduler::RequestHandle> handle =
        absl::NotFoundError("no session");
    if (!choices_[i].session_id.empty()) {
      scheduler::GenerationRequest request = plan_.choices[i];
      // The session holds the prompt; its pending token starts the input.
      request.prompt.clear();
      handle = engine_->sessions().SubmitGeneration(
          choices_[i].session_id, true, std::move(request),
          std::make_shared<ChoiceSink>(shared_from_this(),
                                       static_cast<int>(i)),
          exchange_->key_owner());
    }
    if (!handle.ok() && (absl::IsNotFound(handle.status()) ||
                         absl::IsResourceExhausted(handle.status()))) {
      // No session for this choice (refused, or evicted by a later fork when
      // the budget is full): it runs on its own, with the same result.
      CloseSession(static_cast<int>(i));
      handle = SubmitOne(static_cast<int>(i));
    }
    if (!handle.ok()) {
      Fail(handle.status());
      // Those not submitted are closed now; the others when they end.
      for (size_t j = i; j < choices_.size(); ++j) {
        CloseSession(static_cast<int>(j));
      }
      return;
    }
    choices_[i].handle = *handle;
    choices_[i].submitted = true;
  }
  StartStream();
}

absl::StatusOr<scheduler::RequestHandle> CompletionCall::SubmitOne(
    int index) {
  // Through automatic prefix reuse, as gRPC Generate does (the scheduler's
  // SubmitGeneration as is when --prefix-reuse is off).
  return engine_->sessions().SubmitGenerationReusing(
      plan_.choices[index],
      std::make_shared<ChoiceSink>(shared_from_this(), index),
      exchange_->key_owner());
}

absl::Status CompletionCall::SubmitIndependent() {
  for (size_t i = 0; i < plan_.choices.size(); ++i) {
    absl::StatusOr<scheduler::RequestHandle> handle =
        SubmitOne(static_cast<int>(i));
    if (!handle.ok()) {
      CancelAll();
      return handle.status();
    }
    choices_[i].handle = *handle;
    choices_[i].submitted = true;
  }
  return absl::OkStatus();
}

void CompletionCall::FinishWithoutGenerating() {
  scheduler::Completion completion;
  completion.finish_reason = scheduler::FinishReason::kLength;
  completion.usage.prompt_tokens = prompt_tokens_;
  for (size_t i = 0; i < choices_.size() && !ended_; ++i) {
    OnFinished(static_cast<int>(i), {}, completion);
  }
}

void CompletionCall::OnPromptScored(scheduler::ScoreResult result) {
  scoring_ = false;
  if (ended_) return;
  prompt_logprobs_->rest = std::move(result.token_logprobs);
  if (absl::Status submitted = SubmitGenerations(); !submitted.ok()) {
    Fail(submitted);
    return;
  }
  if (!SubmitsLater()) StartStream();
  if (!plan_.generate) FinishWithoutGenerating();
}

void CompletionCall::OnPromptScoreFailed(const absl::Status& status) {
  scoring_ = false;
  if (ended_) return;
  Fail(status);
}

void CompletionCall::CancelAll() {
  if (scoring_) engine_->scheduler().Cancel(score_handle_);
  for (Choice& choice : choices_) {
    if (choice.submitted && !choice.done) {
      engine_->scheduler().Cancel(choice.handle);
    }
  }
}

void CompletionCall::OnClientGone() {
  if (ended_) return;
  CancelAll();
  ended_ = true;
  // The exchange ends now (the transport records it as 499); the
  // cancelled choices' last reports are dropped.
  if (stream_started_) {
    exchange_->EndEventStream();
  } else {
    exchange_->Reply(499, "");
  }
}

void CompletionCall::Fail(const absl::Status& status) {
  ended_ = true;
  CancelAll();
  const ApiError error = ErrorFromStatus(status);
  if (!stream_started_) {
    exchange_->Reply(error.http_status, ErrorBody(error));
    return;
  }
  exchange_->SendEvent(ErrorBody(error));
  exchange_->SendEvent("[DONE]");
  exchange_->EndEventStream();
}

void CompletionCall::SendChunk(int index, ChoiceDelta delta,
                               const scheduler::Completion* finish) {
  Choice& choice = choices_[index];
  const bool first = !choice.started;
  if (first && plan_.echo) delta.text = plan_.echo_text + delta.text;
  if (first && prompt_logprobs_.has_value()) delta.prompt = &*prompt_logprobs_;
  // Nothing to say yet (text held back, e.g. a possible stop sequence).
  if (delta.text.empty() && delta.logprobs.empty() && delta.prompt == nullptr &&
      finish == nullptr && !(first && plan_.kind == ApiKind::kChat)) {
    return;
  }
  choice.started = true;
  exchange_->SendEvent(DumpJson(shaper_.Chunk(
      index, delta, &choice.text_offset, finish, first, plan_.include_usage)));
}

void CompletionCall::OnTokens(int index, scheduler::TokenUpdate update) {
  if (ended_) return;
  Choice& choice = choices_[index];
  if (plan_.stream) {
    SendChunk(index, {std::move(update.text), std::move(update.logprobs)},
              nullptr);
    return;
  }
  choice.output.text += update.text;
  for (scheduler::TokenLogprob& entry : update.logprobs) {
    choice.output.logprobs.push_back(std::move(entry));
  }
}

void CompletionCall::OnFinished(int index, scheduler::TokenUpdate update,
                                const scheduler::Completion& completion) {
  Choice& choice = choices_[index];
  choice.done = true;
  const bool forked = !choice.session_id.empty();
  CloseSession(index);
  if (ended_) return;
  choice.completion = completion;
  if (forked) {
    // The whole prompt; cached: what the prompt's session took from a
    // retained state (an earlier request's), not what this request's own
    // prefill supplied to the forks.
    choice.completion.usage.prompt_tokens = prompt_tokens_;
    choice.completion.usage.cached_tokens = prompt_cached_tokens_;
  }
  ++finished_;
  if (plan_.stream) {
    SendChunk(index, {std::move(update.text), std::move(update.logprobs)},
              &completion);
  } else {
    choice.output.text += update.text;
    for (scheduler::TokenLogprob& entry : update.logprobs) {
      choice.output.logprobs.push_back(std::move(entry));
    }
  }
  FinishIfDone();
}

void CompletionCall::OnFailed(int index, const absl::Status& status) {
  choices_[index].done = true;
  CloseSession(index);
  if (ended_) return;
  Fail(status);
}

void CompletionCall::FinishIfDone() {
  if (finished_ < static_cast<int>(choices_.size())) return;
  ended_ = true;
  int completion_tokens = 0;
  for (const Choice& choice : choices_) {
    completion_tokens += choice.completion.usage.generated_tokens;
  }
  const int prompt_tokens =
      choices_.front().completion.usage.prompt_tokens > 0
          ? choices_.front().completion.usage.prompt_tokens
          : prompt_tokens_;
  // The first choice's: with n > 1 the choices run side by side, so the
  // others find at most the same retained state.
  const int cached_tokens = choices_.front().completion.usage.cached_tokens;
  if (plan_.stream) {
    if (plan_.include_usage) {
      exchange_->SendEvent(DumpJson(shaper_.UsageChunk(
          prompt_tokens, completion_tokens, cached_tokens)));
    }
    exchange_->SendEvent("[DONE]");
    exchange_->EndEventStream();
    return;
  }
  std::vector<ChoiceDelta> outputs;
  std::vector<scheduler::Completion> completions;
  for (Choice& choice : choices_) {
    outputs.push_back(std::move(choice.output));
    completions.push_back(choice.completion);
  }
  exchange_->Reply(
      200, DumpJson(shaper_.Response(
               outputs, completions, plan_.echo_text,
               prompt_logprobs_.has_value() ? &*prompt_logprobs_ : nullptr,
               prompt_tokens, cached_tokens)));
}

}  // namespace

void StartCompletionCall(std::shared_ptr<HttpExchange> exchange,
                         core::Engine* engine, CompletionPlan plan,
                         std::string model_name) {
  std::make_shared<CompletionCall>(std::move(exchange), engine, std::move(plan),
                                   std::move(model_name))
      ->Start();
}

}  // namespace tvq::service::http
