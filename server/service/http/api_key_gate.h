// The API key check of the HTTP front end (--api-keys-file,
// docs/security.md): an HttpHandler in front of the routes. A request
// whose "Authorization" header is not "Bearer KEY" with a key of the store
// gets 401 in OpenAI's shape,
//   {"error": {"message": "...", "type": "invalid_request_error",
//              "param": null, "code": "invalid_api_key"}}
// with "WWW-Authenticate: Bearer", before any route sees it (unknown paths
// too: 401, not 404). With `exempt_health`, GET /health needs no key.
#ifndef TVQ_SERVER_SERVICE_HTTP_API_KEY_GATE_H_
#define TVQ_SERVER_SERVICE_HTTP_API_KEY_GATE_H_

#include <memory>

#include "server/auth/api_key_store.h"
#include "server/metrics/auth_metrics.h"
#include "server/service/http/http_errors.h"
#include "server/service/http/http_exchange.h"

namespace tvq::service::http {

// The 401 of a failed check (`check` not kAccepted).
ApiError UnauthenticatedError(auth::KeyCheck check);

class ApiKeyGate final : public HttpHandler {
 public:
  // `keys` and `next` must outlive the gate; `observer` may be null.
  ApiKeyGate(const auth::ApiKeyStore* keys, bool exempt_health,
             metrics::AuthObserver* observer, HttpHandler* next);

  void Handle(std::shared_ptr<HttpExchange> exchange) override;

 private:
  const auth::ApiKeyStore* const keys_;
  const bool exempt_health_;
  metrics::AuthObserver* const observer_;
  HttpHandler* const next_;
};

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_API_KEY_GATE_H_
