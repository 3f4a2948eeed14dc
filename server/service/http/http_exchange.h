// What a route handler sees of one HTTP request and how it answers it, free
// of any HTTP library type. The transport (http_session.cc) implements it.
//
// Threading: the handler is called on the connection's strand; every method
// below except Post must be called on that strand. Post (any thread, never
// blocks) runs a task there: the scheduler's sinks use it to hand tokens to
// the exchange. Once the client is gone (disconnected, too slow, write
// error), Reply/SendEvent/EndEventStream write nothing but still end the
// exchange, so every exchange ends exactly once.
#ifndef TVQ_SERVER_SERVICE_HTTP_HTTP_EXCHANGE_H_
#define TVQ_SERVER_SERVICE_HTTP_HTTP_EXCHANGE_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tvq::service::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  // "GET", "POST", ...
  std::string method;
  // The path without the query ("/v1/models").
  std::string path;
  std::string body;
  // Header names in lower case.
  HeaderList headers;

  // The first header `name` (lower case), or "".
  std::string_view Header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key == name) return value;
    }
    return {};
  }
};

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;

  virtual const HttpRequest& request() const = 0;
  // The method label of tvq_requests_total{frontend="http"}
  // ("/v1/completions"); the transport uses "other" until a handler names
  // one.
  virtual void SetRoute(std::string route) = 0;
  // The owner id (auth::KeyOwnerId) of the API key the request was accepted
  // with: set by ApiKeyGate before the handler runs; "" without keys.
  virtual void SetKeyOwner(std::string owner) = 0;
  virtual const std::string& key_owner() const = 0;

  // Runs `task` on the exchange's strand. Any thread; never blocks.
  virtual void Post(std::function<void()> task) = 0;

  // A whole response (Content-Length). Ends the exchange.
  virtual void Reply(int status, std::string body,
                     std::string_view content_type = "application/json",
                     const HeaderList& headers = {}) = 0;

  // A Server-Sent Events response: 200, text/event-stream, chunked;
  // `headers` go out too.
  virtual void StartEventStream(const HeaderList& headers = {}) = 0;
  // Queues "data: <data>\n\n". Returns false when the client is gone, or when
  // the output waiting for a slow client would pass the server's bound: the
  // exchange then counts as gone (OnClientGone runs, the connection closes).
  virtual bool SendEvent(std::string_view data) = 0;
  // Ends the stream once everything queued is written. Ends the exchange.
  virtual void EndEventStream() = 0;

  // `callback` runs once, on the strand, if the client goes away before the
  // exchange ends (disconnect, write error, write timeout, too slow). It runs
  // at once if the client is already gone.
  virtual void OnClientGone(std::function<void()> callback) = 0;
  virtual bool client_gone() const = 0;
};

// Answers requests (the router). Called on the connection's strand; must not
// block: work that waits (generation) answers later through the exchange.
class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  virtual void Handle(std::shared_ptr<HttpExchange> exchange) = 0;
};

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_HTTP_EXCHANGE_H_
