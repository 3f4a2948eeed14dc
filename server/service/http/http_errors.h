// Errors of the HTTP front end in OpenAI's shape, and the one mapping from
// absl::Status to an HTTP status:
//
//   {"error": {"message": "...", "type": "...", "param": "..."|null,
//              "code": "..."|null}}
//
// Validation errors carry the offending field as a status payload
// (InvalidField) so that `param` names it; every other error has a null
// `param`. docs/http.md lists the statuses.
#ifndef TVQ_SERVER_SERVICE_HTTP_HTTP_ERRORS_H_
#define TVQ_SERVER_SERVICE_HTTP_HTTP_ERRORS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace tvq::service::http {

struct ApiError {
  int http_status = 500;
  // OpenAI's error type: "invalid_request_error", "rate_limit_error",
  // "service_unavailable_error", "timeout_error", "server_error".
  std::string type;
  std::string message;
  // The request field at fault ("messages[1].role"); empty = null.
  std::string param;
  // A machine-readable code ("model_not_found", "queue_full"); empty = null.
  std::string code;
};

// InvalidArgument whose message is `message` and whose param is `field`.
absl::Status InvalidField(std::string_view field, std::string_view message);

// NotFound for a `model` other than the served one; its error code is
// "model_not_found".
absl::Status ModelNotFound(std::string_view model);

// The one absl::Status -> HTTP mapping:
//   INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE  400
//   UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404
//   RESOURCE_EXHAUSTED 429 (the scheduler's queue is full)
//   CANCELLED 499, UNIMPLEMENTED 501, UNAVAILABLE 503 (loading, draining),
//   DEADLINE_EXCEEDED 504, anything else 500.
// `status` must not be OK.
ApiError ErrorFromStatus(const absl::Status& status);

// Errors the transport and the router raise themselves.
ApiError NotFoundError(std::string message, std::string code);
ApiError MethodNotAllowedError(std::string message);
ApiError BodyTooLargeError(std::string message);

// {"error": {...}} as JSON text.
std::string ErrorBody(const ApiError& error);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_HTTP_ERRORS_H_
