#include "server/service/http/responses_call.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/base/str_cat.h"
#include "server/service/http/completion_response.h"
#include "server/service/http/http_errors.h"
#include "server/sessions/session_manager.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;

std::vector<StoredResponse> ResponseStore::Put(const std::string& id,
                                               StoredResponse response) {
  absl::MutexLock lock(&mutex_);
  responses_[id] = std::move(response);
  order_.push_back(id);
  std::vector<StoredResponse> forgotten;
  while (responses_.size() > capacity_ && !order_.empty()) {
    auto it = responses_.find(order_.front());
    order_.pop_front();
    if (it == responses_.end()) continue;
    forgotten.push_back(std::move(it->second));
    responses_.erase(it);
  }
  // Ids deleted meanwhile pile up in order_ only until it is twice the
  // size of the map.
  if (order_.size() > 2 * responses_.size() + 64) {
    std::deque<std::string> kept;
    for (std::string& key : order_) {
      if (responses_.contains(key)) kept.push_back(std::move(key));
    }
    order_ = std::move(kept);
  }
  return forgotten;
}

std::optional<StoredResponse> ResponseStore::Get(const std::string& id,
                                                 const std::string& caller) {
  absl::MutexLock lock(&mutex_);
  auto it = responses_.find(id);
  if (it == responses_.end() || it->second.owner != caller) {
    return std::nullopt;
  }
  return it->second;
}

std::optional<StoredResponse> ResponseStore::Remove(const std::string& id,
                                                    const std::string& caller) {
  absl::MutexLock lock(&mutex_);
  auto it = responses_.find(id);
  if (it == responses_.end() || it->second.owner != caller) {
    return std::nullopt;
  }
  StoredResponse response = std::move(it->second);
  responses_.erase(it);
  return response;
}

namespace {

class ResponsesCall final : public std::enable_shared_from_this<ResponsesCall> {
 public:
  ResponsesCall(std::shared_ptr<HttpExchange> exchange, core::Engine* engine,
                ResponsesPlan plan, std::string model_name,
                std::shared_ptr<ResponseStore> store,
                std::optional<routing::SessionKey> session_key)
      : exchange_(std::move(exchange)),
        engine_(engine),
        plan_(std::move(plan)),
        model_(std::move(model_name)),
        store_(std::move(store)),
        session_key_(std::move(session_key)),
        id_(plan_.request.request_id),
        created_(absl::ToUnixSeconds(absl::Now())) {}

  void Start();

  // ---- on the strand
  void OnSessionReady(absl::StatusOr<sessions::SessionInfo> info);
  void OnTokens(scheduler::TokenUpdate update);
  void OnFinished(scheduler::TokenUpdate update,
                  const scheduler::Completion& completion);
  void OnFailed(const absl::Status& status);

  HttpExchange& exchange() { return *exchange_; }
  // Who asks: the owner of the response's session (only that key sees it).
  // A stored response's session counts against --max-sessions-per-key; one
  // that is not stored holds its session only while it runs, uncounted.
  const std::string& Caller() const { return exchange_->key_owner(); }

 private:
  sessions::SessionManager& sessions() { return engine_->sessions(); }
  // The response object; `completion` null while it is in progress.
  Json Body(const scheduler::Completion* completion) const;
  Json Event(std::string_view type) {
    return Json{{"type", type}, {"sequence_number", sequence_++}};
  }
  void Fail(const absl::Status& status);
  void OnClientGone();
  void CloseSession() {
    if (!session_id_.empty()) (void)sessions().Close(session_id_);
  }

  const std::shared_ptr<HttpExchange> exchange_;
  core::Engine* const engine_;
  const ResponsesPlan plan_;
  const std::string model_;
  const std::shared_ptr<ResponseStore> store_;
  const std::optional<routing::SessionKey> session_key_;
  const std::string id_;
  const int64_t created_;
  // This turn's session (new, or a fork of the previous response's).
  std::string session_id_;
  std::string root_;
  scheduler::RequestHandle handle_ = 0;
  bool submitted_ = false;
  bool answered_ = false;
  bool streaming_ = false;
  int64_t sequence_ = 0;
  std::string text_;
};

class ResponseSink final : public scheduler::TokenSink {
 public:
  explicit ResponseSink(std::shared_ptr<ResponsesCall> call)
      : call_(std::move(call)) {}
  void OnTokens(scheduler::TokenUpdate update) override {
    call_->exchange().Post(
        [call = call_, update = std::move(update)]() mutable {
          call->OnTokens(std::move(update));
        });
  }
  void OnFinished(scheduler::TokenUpdate update,
                  const scheduler::Completion& completion) override {
    call_->exchange().Post(
        [call = call_, update = std::move(update), completion]() mutable {
          call->OnFinished(std::move(update), completion);
        });
  }
  void OnFailed(const absl::Status& status) override {
    call_->exchange().Post([call = call_, status] { call->OnFailed(status); });
  }

 private:
  const std::shared_ptr<ResponsesCall> call_;
};

void ResponsesCall::Start() {
  exchange_->OnClientGone(
      [self = shared_from_this()] { self->OnClientGone(); });
  if (!plan_.previous_response_id.empty()) {
    std::optional<StoredResponse> previous =
        store_->Get(plan_.previous_response_id, Caller());
    if (!previous.has_value()) {
      answered_ = true;
      ApiError error = NotFoundError(
          StrCat("no stored response \"", plan_.previous_response_id,
                 "\" (unknown, deleted, or made with store: false)"),
          "not_found");
      error.param = "previous_response_id";
      exchange_->Reply(error.http_status, ErrorBody(error));
      return;
    }
    if (absl::Status same = CheckSameConversation(session_key_, *previous);
        !same.ok()) {
      answered_ = true;
      ApiError error = ErrorFromStatus(same);
      error.param = "previous_response_id";
      exchange_->Reply(error.http_status, ErrorBody(error));
      return;
    }
    root_ = previous->root;
    // A fork, so that the previous response stays continuable.
    OnSessionReady(
        sessions().Fork(previous->session_id, "", Caller(), plan_.store));
    return;
  }
  sessions::SessionManager::CreateParams params;
  params.request_id = id_;
  params.frontend = scheduler::Frontend::kHttp;
  params.owner = Caller();
  params.counted = plan_.store;
  sessions().Create(std::move(params),
                    [self = shared_from_this()](
                        absl::StatusOr<sessions::SessionInfo> info) {
                      self->exchange().Post(
                          [self, info = std::move(info)]() mutable {
                            self->OnSessionReady(std::move(info));
                          });
                    });
}

void ResponsesCall::OnSessionReady(absl::StatusOr<sessions::SessionInfo> info) {
  if (!info.ok()) {
    if (answered_) return;
    answered_ = true;
    ApiError error = ErrorFromStatus(info.status());
    if (!plan_.previous_response_id.empty() && error.http_status == 404) {
      error.param = "previous_response_id";
    }
    exchange_->Reply(error.http_status, ErrorBody(error));
    return;
  }
  session_id_ = info->session_id;
  if (answered_) {
    // The client left while the session was being made.
    CloseSession();
    return;
  }
  if (root_.empty()) {
    root_ = session_key_.has_value() ? session_key_->value : session_id_;
  }
  absl::StatusOr<scheduler::RequestHandle> handle =
      sessions().SubmitGeneration(
          session_id_, false, plan_.request,
          std::make_shared<ResponseSink>(shared_from_this()), Caller());
  if (!handle.ok()) {
    CloseSession();
    answered_ = true;
    const ApiError error = ErrorFromStatus(handle.status());
    exchange_->Reply(error.http_status, ErrorBody(error));
    return;
  }
  handle_ = *handle;
  submitted_ = true;
  if (plan_.stream) {
    streaming_ = true;
    exchange_->StartEventStream({{"x-session-id", root_}});
    Json created = Event("response.created");
    created["response"] = Body(nullptr);
    exchange_->SendEvent(DumpJson(created));
  }
}

Json ResponsesCall::Body(const scheduler::Completion* completion) const {
  const std::string hex = id_.substr(id_.find('_') + 1);
  Json output = Json::array();
  Json usage = nullptr;
  Json incomplete = nullptr;
  std::string status = "in_progress";
  if (completion != nullptr) {
    const bool length =
        completion->finish_reason == scheduler::FinishReason::kLength;
    status = length ? "incomplete" : "completed";
    if (length) incomplete = Json{{"reason", "max_output_tokens"}};
    output.push_back(Json{
        {"type", "message"},
        {"id", StrCat("msg_", hex)},
        {"status", status},
        {"role", "assistant"},
        {"content", Json::array({Json{{"type", "output_text"},
                                      {"text", text_},
                                      {"annotations", Json::array()}}})}});
    // The whole context counts as input; the session supplied the cached
    // part (the fed prompt is the session's pending token plus the new
    // input).
    const int cached = completion->usage.cached_tokens;
    const int input = cached + completion->usage.prompt_tokens;
    const int generated = completion->usage.generated_tokens;
    usage = Json{{"input_tokens", input},
                 {"input_tokens_details", {{"cached_tokens", cached}}},
                 {"output_tokens", generated},
                 {"output_tokens_details", {{"reasoning_tokens", 0}}},
                 {"total_tokens", input + generated}};
  }
  return Json{
      {"id", id_},
      {"object", "response"},
      {"created_at", created_},
      {"status", status},
      {"error", nullptr},
      {"incomplete_details", incomplete},
      {"instructions", plan_.instructions.has_value()
                           ? Json(*plan_.instructions)
                           : Json(nullptr)},
      {"max_output_tokens", plan_.max_output_tokens.has_value()
                                ? Json(*plan_.max_output_tokens)
                                : Json(nullptr)},
      {"model", model_},
      {"output", std::move(output)},
      {"parallel_tool_calls", false},
      {"previous_response_id", plan_.previous_response_id.empty()
                                   ? Json(nullptr)
                                   : Json(plan_.previous_response_id)},
      {"store", plan_.store},
      {"temperature", plan_.temperature},
      {"text", {{"format", {{"type", "text"}}}}},
      {"tool_choice", "auto"},
      {"tools", Json::array()},
      {"top_p", plan_.top_p},
      {"truncation", "disabled"},
      {"usage", std::move(usage)},
      {"metadata", plan_.metadata},
  };
}

void ResponsesCall::OnTokens(scheduler::TokenUpdate update) {
  if (answered_) return;
  text_ += update.text;
  if (streaming_ && !update.text.empty()) {
    Json delta = Event("response.output_text.delta");
    delta["item_id"] = StrCat("msg_", id_.substr(id_.find('_') + 1));
    delta["output_index"] = 0;
    delta["content_index"] = 0;
    delta["delta"] = update.text;
    exchange_->SendEvent(DumpJson(delta));
  }
}

void ResponsesCall::OnFinished(scheduler::TokenUpdate update,
                               const scheduler::Completion& completion) {
  submitted_ = false;
  if (answered_) {
    // The client left: the turn is not stored.
    CloseSession();
    return;
  }
  OnTokens(std::move(update));
  answered_ = true;
  if (completion.finish_reason == scheduler::FinishReason::kCancelled) {
    // Cut short at a drain: the session did not advance.
    CloseSession();
    Fail(absl::UnavailableError("the server is shutting down"));
    return;
  }
  Json body = Body(&completion);
  if (plan_.store) {
    for (const StoredResponse& forgotten :
         store_->Put(id_, StoredResponse{session_id_, root_, body, Caller()})) {
      (void)sessions().Close(forgotten.session_id);
    }
  } else {
    CloseSession();
  }
  if (streaming_) {
    Json done = Event("response.completed");
    done["response"] = std::move(body);
    exchange_->SendEvent(DumpJson(done));
    exchange_->EndEventStream();
    return;
  }
  exchange_->Reply(200, DumpJson(body), "application/json",
                   {{"x-session-id", root_}});
}

void ResponsesCall::OnFailed(const absl::Status& status) {
  submitted_ = false;
  CloseSession();
  if (answered_) return;
  answered_ = true;
  Fail(status);
}

void ResponsesCall::Fail(const absl::Status& status) {
  answered_ = true;
  const ApiError error = ErrorFromStatus(status);
  if (!streaming_) {
    exchange_->Reply(error.http_status, ErrorBody(error));
    return;
  }
  // OpenAI's "error" event.
  Json event = Event("error");
  event["code"] = error.code.empty() ? Json(nullptr) : Json(error.code);
  event["message"] = error.message;
  event["param"] = error.param.empty() ? Json(nullptr) : Json(error.param);
  exchange_->SendEvent(DumpJson(event));
  exchange_->EndEventStream();
}

void ResponsesCall::OnClientGone() {
  if (answered_) return;
  answered_ = true;
  if (submitted_) {
    // The session stays as it was; its last report closes it.
    engine_->scheduler().Cancel(handle_);
  } else {
    CloseSession();
  }
  if (streaming_) {
    exchange_->EndEventStream();
  } else {
    exchange_->Reply(499, "");
  }
}

}  // namespace

absl::StatusOr<std::optional<routing::SessionKey>> SessionKeyOf(
    const HttpRequest& request) {
  return routing::FindSessionKey(
      [&request](std::string_view name) { return request.Header(name); });
}

absl::Status CheckSameConversation(
    const std::optional<routing::SessionKey>& key,
    const StoredResponse& stored) {
  return routing::CombineSessionId(key, stored.root,
                                   "the stored response's conversation")
      .status();
}

void StartResponsesCall(std::shared_ptr<HttpExchange> exchange,
                        core::Engine* engine, ResponsesPlan plan,
                        std::string model_name,
                        std::shared_ptr<ResponseStore> store,
                        std::optional<routing::SessionKey> session_key) {
  std::make_shared<ResponsesCall>(std::move(exchange), engine, std::move(plan),
                                  std::move(model_name), std::move(store),
                                  std::move(session_key))
      ->Start();
}

}  // namespace tvq::service::http
