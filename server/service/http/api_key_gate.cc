#include "server/service/http/api_key_gate.h"

#include <utility>

namespace tvq::service::http {

ApiError UnauthenticatedError(auth::KeyCheck check) {
  ApiError error;
  error.http_status = 401;
  error.type = "invalid_request_error";
  error.code = "invalid_api_key";
  error.message =
      check == auth::KeyCheck::kMissing
          ? "missing API key: send the header \"Authorization: Bearer KEY\" "
            "(docs/security.md)"
          : "invalid API key: the Authorization header is not \"Bearer KEY\" "
            "with a key of the server's --api-keys-file";
  return error;
}

ApiKeyGate::ApiKeyGate(const auth::ApiKeyStore* keys, bool exempt_health,
                       metrics::AuthObserver* observer, HttpHandler* next)
    : keys_(keys),
      exempt_health_(exempt_health),
      observer_(observer),
      next_(next) {}

void ApiKeyGate::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& request = exchange->request();
  if (exempt_health_ && request.method == "GET" && request.path == "/health") {
    next_->Handle(std::move(exchange));
    return;
  }
  std::string owner;
  const auth::KeyCheck check =
      keys_->CheckAuthorization(request.Header("authorization"), &owner);
  if (check == auth::KeyCheck::kAccepted) {
    exchange->SetKeyOwner(std::move(owner));
    next_->Handle(std::move(exchange));
    return;
  }
  if (observer_ != nullptr) {
    observer_->OnAuthFailure("http", auth::KeyCheckName(check));
  }
  const ApiError error = UnauthenticatedError(check);
  exchange->Reply(error.http_status, ErrorBody(error), "application/json",
                  {{"WWW-Authenticate", "Bearer"}});
}

}  // namespace tvq::service::http
