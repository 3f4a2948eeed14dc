#include "server/service/http/openai_routes.h"

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"
#include "server/core/engine.h"
#include "server/service/http/completion_call.h"
#include "server/service/http/completion_response.h"
#include "server/service/http/json_fields.h"
#include "server/text/incremental_detokenizer.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;
namespace {

constexpr char kModelsPrefix[] = "/v1/models/";
constexpr char kResponsesPrefix[] = "/v1/responses/";

void ReplyJson(HttpExchange& exchange, const Json& body) {
  exchange.Reply(200, DumpJson(body));
}

uint64_t RandomSeedForRequest() {
  thread_local uint64_t state =
      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^
      reinterpret_cast<uintptr_t>(&state);
  // SplitMix64.
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

struct Route {
  std::string_view path;
  std::string_view method;
};

// The routes and their methods (405 for the others).
constexpr std::array<Route, 7> kRoutes = {{
    {"/v1/completions", "POST"},
    {"/v1/chat/completions", "POST"},
    {"/v1/models", "GET"},
    {"/tokenize", "POST"},
    {"/detokenize", "POST"},
    {"/health", "GET"},
    {"/v1/responses", "POST"},
}};

}  // namespace

void ReplyError(HttpExchange& exchange, const ApiError& error) {
  exchange.Reply(error.http_status, ErrorBody(error));
}

void ReplyStatus(HttpExchange& exchange, const absl::Status& status) {
  ReplyError(exchange, ErrorFromStatus(status));
}

OpenAiRoutes::OpenAiRoutes(const core::Readiness* readiness,
                           OpenAiOptions options)
    : readiness_(readiness),
      options_(std::move(options)),
      created_(absl::ToUnixSeconds(absl::Now())) {}

RequestContext OpenAiRoutes::Context(const core::Engine& engine) const {
  RequestContext context;
  context.config = &engine.model_config();
  context.tokenizer = &engine.tokenizer();
  context.limits = engine.config().limits;
  context.served_model_name = options_.served_model_name;
  context.chat_template =
      options_.chat_template.has_value() ? &*options_.chat_template : nullptr;
  context.default_seed = RandomSeedForRequest();
  return context;
}

void OpenAiRoutes::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& request = exchange->request();
  const std::string& path = request.path;
  const bool model_path = absl::StartsWith(path, kModelsPrefix) &&
                          path.size() > sizeof(kModelsPrefix) - 1;
  if (absl::StartsWith(path, kResponsesPrefix) &&
      path.size() > sizeof(kResponsesPrefix) - 1) {
    exchange->SetRoute("/v1/responses/{id}");
    if (request.method != "GET" && request.method != "DELETE") {
      ApiError error = MethodNotAllowedError(StrCat(
          path, " takes GET or DELETE, not ", request.method));
      exchange->Reply(error.http_status, ErrorBody(error), "application/json",
                      {{"Allow", "GET, DELETE"}});
      return;
    }
    return StoredResponseRoute(
        *exchange,
        std::string_view(path).substr(sizeof(kResponsesPrefix) - 1));
  }
  const Route* route = nullptr;
  for (const Route& candidate : kRoutes) {
    if (candidate.path == path) route = &candidate;
  }
  if (route == nullptr && !model_path) {
    ReplyError(*exchange,
               NotFoundError(StrCat("no route ", request.method, " ", path,
                                    " (docs/http.md lists the "
                                    "endpoints)"),
                             "not_found"));
    return;
  }
  const std::string_view method = route != nullptr ? route->method : "GET";
  exchange->SetRoute(route != nullptr ? std::string(route->path)
                                      : "/v1/models/{id}");
  if (request.method != method) {
    ApiError error = MethodNotAllowedError(
        StrCat(path, " takes ", method, ", not ", request.method));
    exchange->Reply(error.http_status, ErrorBody(error), "application/json",
                    {{"Allow", std::string(method)}});
    return;
  }
  if (path == "/health") return Health(*exchange);
  if (path == "/v1/models") return ListModels(*exchange);
  if (model_path) {
    return GetModel(*exchange,
                    std::string_view(path).substr(sizeof(kModelsPrefix) - 1));
  }
  if (path == "/tokenize") return Tokenize(*exchange);
  if (path == "/detokenize") return Detokenize(*exchange);
  if (path == "/v1/completions") {
    return Completions(std::move(exchange), ApiKind::kCompletion);
  }
  if (path == "/v1/chat/completions") {
    return Completions(std::move(exchange), ApiKind::kChat);
  }
  CreateResponse(std::move(exchange));
}

void OpenAiRoutes::CreateResponse(std::shared_ptr<HttpExchange> exchange) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForNewWork();
  if (!engine.ok()) return ReplyStatus(*exchange, engine.status());
  absl::StatusOr<nlohmann::json> body =
      ParseRequestBody(exchange->request().body);
  if (!body.ok()) return ReplyStatus(*exchange, body.status());
  absl::StatusOr<ResponsesPlan> plan =
      ParseResponsesRequest(*body, Context(**engine));
  if (!plan.ok()) return ReplyStatus(*exchange, plan.status());
  absl::StatusOr<std::optional<routing::SessionKey>> session_key =
      SessionKeyOf(exchange->request());
  if (!session_key.ok()) return ReplyStatus(*exchange, session_key.status());
  StartResponsesCall(std::move(exchange), *engine, *std::move(plan),
                     options_.served_model_name, responses_,
                     *std::move(session_key));
}

// GET: the stored response. DELETE: forgets it and closes its session
// (responses continued from it keep their own).
void OpenAiRoutes::StoredResponseRoute(HttpExchange& exchange,
                                       std::string_view id) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForQueries();
  if (!engine.ok()) return ReplyStatus(exchange, engine.status());
  const std::string key(id);
  const bool remove = exchange.request().method == "DELETE";
  absl::StatusOr<std::optional<routing::SessionKey>> session_key =
      SessionKeyOf(exchange.request());
  if (!session_key.ok()) return ReplyStatus(exchange, session_key.status());
  if (remove && session_key->has_value()) {
    // Forget nothing that belongs to another conversation.
    std::optional<StoredResponse> peek =
        responses_->Get(key, exchange.key_owner());
    if (peek.has_value()) {
      if (absl::Status same = CheckSameConversation(*session_key, *peek);
          !same.ok()) {
        return ReplyStatus(exchange, same);
      }
    }
  }
  std::optional<StoredResponse> stored =
      remove ? responses_->Remove(key, exchange.key_owner())
             : responses_->Get(key, exchange.key_owner());
  if (!stored.has_value()) {
    return ReplyError(
        exchange,
        NotFoundError(StrCat("no stored response \"", key,
                             "\" (unknown, deleted, or made with "
                             "store: false)"),
                      "not_found"));
  }
  if (remove) {
    (void)(*engine)->sessions().Close(stored->session_id);
    return exchange.Reply(
        200,
        DumpJson(Json{{"id", key}, {"object", "response"}, {"deleted", true}}),
        "application/json", {{"x-session-id", stored->root}});
  }
  if (absl::Status same = CheckSameConversation(*session_key, *stored);
      !same.ok()) {
    return ReplyStatus(exchange, same);
  }
  exchange.Reply(200, DumpJson(stored->body), "application/json",
                 {{"x-session-id", stored->root}});
}

void OpenAiRoutes::Health(HttpExchange& exchange) {
  switch (readiness_->state()) {
    case core::ReadinessState::kServing:
      ReplyJson(exchange, Json{{"status", "ok"}});
      return;
    case core::ReadinessState::kLoading:
      ReplyStatus(exchange, absl::UnavailableError(
                                "the model is loading; retry shortly"));
      return;
    case core::ReadinessState::kDraining:
      ReplyStatus(exchange,
                  absl::UnavailableError("the server is shutting down and "
                                         "accepts no new requests"));
      return;
  }
}

Json OpenAiRoutes::ModelEntry(const core::ModelInfo& info) const {
  const core::RequestLimits& limits = info.limits;
  // The names of GetModelInfo's ServerLimits; the transport's own where
  // HTTP differs (its body limit; one request at a time per HTTP/1.1
  // connection).
  Json reported = {
      {"max_request_bytes", options_.max_request_bytes},
      {"max_prompt_tokens", limits.max_prompt_tokens},
      {"max_new_tokens_limit", limits.max_new_tokens_limit},
      {"default_max_new_tokens",
       std::min(limits.default_max_new_tokens, limits.max_new_tokens_limit)},
      {"max_queue", info.max_queue},
      {"max_stop_sequences", limits.max_stop_sequences},
      {"max_stop_sequence_bytes", limits.max_stop_sequence_bytes},
      {"max_stop_token_ids", limits.max_stop_token_ids},
      {"max_top_logprobs", limits.max_top_logprobs},
      {"max_pending_output_bytes", limits.max_pending_output_bytes},
      {"max_connections", options_.max_connections},
      {"max_concurrent_streams", 1},
      {"max_detokenize_tokens", limits.max_detokenize_tokens()},
      {"session_memory_bytes", info.session_config.memory_bytes},
      {"max_sessions", info.sessions.capacity},
      {"max_sessions_per_key", info.session_config.max_per_key},
  };
  return Json{{"id", options_.served_model_name},
              {"object", "model"},
              {"created", created_},
              {"owned_by", "tvq-serve"},
              {"root", info.path},
              {"max_model_len", limits.max_prompt_tokens},
              {"limits", std::move(reported)}};
}

void OpenAiRoutes::ListModels(HttpExchange& exchange) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForQueries();
  if (!engine.ok()) return ReplyStatus(exchange, engine.status());
  ReplyJson(exchange,
            Json{{"object", "list"},
                 {"data", Json::array({ModelEntry((*engine)->Info())})}});
}

void OpenAiRoutes::GetModel(HttpExchange& exchange, std::string_view id) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForQueries();
  if (!engine.ok()) return ReplyStatus(exchange, engine.status());
  if (id != options_.served_model_name) {
    return ReplyStatus(exchange, ModelNotFound(id));
  }
  ReplyJson(exchange, ModelEntry((*engine)->Info()));
}

// vLLM: {"prompt", "add_special_tokens"}; llama.cpp: {"content",
// "add_special", "with_pieces"}. The special token is the eos prefix.
void OpenAiRoutes::Tokenize(HttpExchange& exchange) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForQueries();
  if (!engine.ok()) return ReplyStatus(exchange, engine.status());
  const RequestContext context = Context(**engine);
  auto run = [&]() -> absl::StatusOr<Json> {
    TVQ_ASSIGN_OR_RETURN(nlohmann::json body,
                         ParseRequestBody(exchange.request().body));
    JsonFields fields(body, "");
    TVQ_RETURN_IF_ERROR(CheckModel(fields.Raw("model"), context));
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> prompt,
                         fields.String("prompt"));
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> content,
                         fields.String("content"));
    if (prompt.has_value() == content.has_value()) {
      return InvalidField("prompt",
                          "give the text as \"prompt\" (or \"content\"), "
                          "exactly one of them");
    }
    TVQ_ASSIGN_OR_RETURN(std::optional<bool> add_special_tokens,
                         fields.Bool("add_special_tokens"));
    TVQ_ASSIGN_OR_RETURN(std::optional<bool> add_special,
                         fields.Bool("add_special"));
    TVQ_ASSIGN_OR_RETURN(std::optional<bool> with_pieces,
                         fields.Bool("with_pieces"));
    TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
    const bool eos_prefix =
        add_special_tokens.value_or(add_special.value_or(true));
    TVQ_ASSIGN_OR_RETURN(
        std::vector<int32_t> tokens,
        TokenizePrompt(prompt.has_value() ? *prompt : *content, eos_prefix,
                       prompt.has_value() ? "prompt" : "content", context));
    Json ids = Json::array();
    for (int32_t id : tokens) {
      if (!with_pieces.value_or(false)) {
        ids.push_back(id);
        continue;
      }
      const int32_t one[] = {id};
      absl::StatusOr<std::string> piece = context.tokenizer->Decode(one);
      ids.push_back(Json{{"id", id}, {"piece", piece.ok() ? *piece : ""}});
    }
    return Json{{"tokens", std::move(ids)},
                {"count", tokens.size()},
                {"max_model_len", context.limits.max_prompt_tokens}};
  };
  absl::StatusOr<Json> answer = run();
  if (!answer.ok()) return ReplyStatus(exchange, answer.status());
  ReplyJson(exchange, *answer);
}

// {"tokens": [...]} -> {"prompt": text} (vLLM) and {"content": text}
// (llama.cpp): the same valid UTF-8 text.
void OpenAiRoutes::Detokenize(HttpExchange& exchange) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForQueries();
  if (!engine.ok()) return ReplyStatus(exchange, engine.status());
  const RequestContext context = Context(**engine);
  auto run = [&]() -> absl::StatusOr<Json> {
    TVQ_ASSIGN_OR_RETURN(nlohmann::json body,
                         ParseRequestBody(exchange.request().body));
    JsonFields fields(body, "");
    TVQ_RETURN_IF_ERROR(CheckModel(fields.Raw("model"), context));
    const nlohmann::json* tokens = fields.Raw("tokens");
    if (tokens == nullptr) {
      return InvalidField("tokens", "tokens is required (an array of ids)");
    }
    TVQ_ASSIGN_OR_RETURN(
        std::vector<int32_t> ids,
        TokenIdArray(*tokens, "tokens", context.config->n_vocab));
    TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
    runtime::IncrementalDetokenizer detokenizer(*context.tokenizer);
    std::string text;
    for (int32_t id : ids) {
      TVQ_ASSIGN_OR_RETURN(std::string piece, detokenizer.Append(id));
      text += piece;
    }
    text += detokenizer.Finish();
    return Json{{"prompt", text}, {"content", text}};
  };
  absl::StatusOr<Json> answer = run();
  if (!answer.ok()) return ReplyStatus(exchange, answer.status());
  ReplyJson(exchange, *answer);
}

void OpenAiRoutes::Completions(std::shared_ptr<HttpExchange> exchange,
                               ApiKind kind) {
  absl::StatusOr<core::Engine*> engine = readiness_->ForNewWork();
  if (!engine.ok()) return ReplyStatus(*exchange, engine.status());
  absl::StatusOr<nlohmann::json> body =
      ParseRequestBody(exchange->request().body);
  if (!body.ok()) return ReplyStatus(*exchange, body.status());
  const RequestContext context = Context(**engine);
  absl::StatusOr<CompletionPlan> plan =
      kind == ApiKind::kChat ? ParseChatCompletionRequest(*body, context)
                             : ParseCompletionRequest(*body, context);
  if (!plan.ok()) return ReplyStatus(*exchange, plan.status());
  StartCompletionCall(std::move(exchange), *engine, *std::move(plan),
                      options_.served_model_name);
}

}  // namespace tvq::service::http
