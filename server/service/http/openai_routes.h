// The OpenAI-compatible routes (docs/http.md):
//   POST /v1/completions        completion_request.h, completion_call.h
//   POST /v1/chat/completions   the same, prompt from the chat template
//   GET  /v1/models, GET /v1/models/{id}
//   POST /tokenize, POST /detokenize
//   GET  /health                200 serving; 503 loading or draining
//   POST /v1/responses, GET/DELETE /v1/responses/{id}   responses_call.h
// Anything else is 404 (405 for a known path with another method). Each
// route asks core::Readiness first: new work (completions) is 503 while
// loading or draining, queries (models, tokenize) only while loading. The
// routes translate and validate only; the engine does the work.
#ifndef TVQ_SERVER_SERVICE_HTTP_OPENAI_ROUTES_H_
#define TVQ_SERVER_SERVICE_HTTP_OPENAI_ROUTES_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "server/core/readiness.h"
#include "server/service/http/chat_template.h"
#include "server/service/http/completion_request.h"
#include "server/service/http/http_errors.h"
#include "server/service/http/http_exchange.h"
#include "server/service/http/responses_call.h"

namespace tvq::service::http {

struct OpenAiOptions {
  // The `model` requests must name (and /v1/models lists).
  std::string served_model_name;
  // The model directory's chat template, if it has one.
  std::optional<ChatTemplate> chat_template;
  // The transport's bounds, reported by /v1/models (HttpServerOptions):
  // the body limit, and the connections open at once (0 = no cap).
  int64_t max_request_bytes = 0;
  int max_connections = 0;
};

class OpenAiRoutes final : public HttpHandler {
 public:
  // `readiness` must outlive the routes.
  OpenAiRoutes(const core::Readiness* readiness, OpenAiOptions options);

  void Handle(std::shared_ptr<HttpExchange> exchange) override;

 private:
  void Health(HttpExchange& exchange);
  void ListModels(HttpExchange& exchange);
  void GetModel(HttpExchange& exchange, std::string_view id);
  void Tokenize(HttpExchange& exchange);
  void Detokenize(HttpExchange& exchange);
  void Completions(std::shared_ptr<HttpExchange> exchange, ApiKind kind);
  void CreateResponse(std::shared_ptr<HttpExchange> exchange);
  void StoredResponseRoute(HttpExchange& exchange, std::string_view id);

  RequestContext Context(const core::Engine& engine) const;
  // A /v1/models entry: the model and every limit a request meets.
  nlohmann::ordered_json ModelEntry(const core::ModelInfo& info) const;

  const core::Readiness* const readiness_;
  const OpenAiOptions options_;
  // /v1/models' "created": when the server started.
  const int64_t created_;
  const std::shared_ptr<ResponseStore> responses_ =
      std::make_shared<ResponseStore>();
};

// Answers `exchange` with `error` in OpenAI's shape.
void ReplyError(HttpExchange& exchange, const ApiError& error);
void ReplyStatus(HttpExchange& exchange, const absl::Status& status);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_OPENAI_ROUTES_H_
