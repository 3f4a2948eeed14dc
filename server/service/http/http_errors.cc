#include "server/service/http/http_errors.h"

#include <optional>
#include <utility>

#include "absl/strings/cord.h"
#include "nlohmann/json.hpp"
#include "server/base/str_cat.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;
namespace {

// Where InvalidField keeps the field name.
constexpr char kParamPayload[] = "type.tvq.dev/http.param";
// Where ModelNotFound keeps its error code.
constexpr char kCodePayload[] = "type.tvq.dev/http.code";

ApiError Make(int http_status, std::string type, std::string message,
              std::string code) {
  ApiError error;
  error.http_status = http_status;
  error.type = std::move(type);
  error.message = std::move(message);
  error.code = std::move(code);
  return error;
}

}  // namespace

absl::Status InvalidField(std::string_view field, std::string_view message) {
  absl::Status status = absl::InvalidArgumentError(std::string(message));
  status.SetPayload(kParamPayload, absl::Cord(std::string(field)));
  return status;
}

absl::Status ModelNotFound(std::string_view model) {
  absl::Status status =
      absl::NotFoundError(StrCat("The model `", model,
                                 "` does not exist (GET /v1/models "
                                 "lists the model this server serves)"));
  status.SetPayload(kParamPayload, absl::Cord("model"));
  status.SetPayload(kCodePayload, absl::Cord("model_not_found"));
  return status;
}

ApiError ErrorFromStatus(const absl::Status& status) {
  std::string message(status.message());
  ApiError error;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      error = Make(400, "invalid_request_error", std::move(message),
                   "invalid_request");
      break;
    case absl::StatusCode::kUnauthenticated:
      error = Make(401, "authentication_error", std::move(message),
                   "invalid_api_key");
      break;
    case absl::StatusCode::kPermissionDenied:
      error = Make(403, "permission_error", std::move(message),
                   "permission_denied");
      break;
    case absl::StatusCode::kNotFound:
      error =
          Make(404, "invalid_request_error", std::move(message), "not_found");
      break;
    case absl::StatusCode::kResourceExhausted:
      error = Make(429, "rate_limit_error", std::move(message), "queue_full");
      break;
    case absl::StatusCode::kCancelled:
      error =
          Make(499, "invalid_request_error", std::move(message), "cancelled");
      break;
    case absl::StatusCode::kUnimplemented:
      error = Make(501, "invalid_request_error", std::move(message),
                   "not_implemented");
      break;
    case absl::StatusCode::kUnavailable:
      error = Make(503, "service_unavailable_error", std::move(message),
                   "unavailable");
      break;
    case absl::StatusCode::kDeadlineExceeded:
      error =
          Make(504, "timeout_error", std::move(message), "deadline_exceeded");
      break;
    default:
      error = Make(500, "server_error", std::move(message), "internal_error");
      break;
  }
  if (auto param = status.GetPayload(kParamPayload)) {
    error.param = std::string(*param);
  }
  if (auto code = status.GetPayload(kCodePayload)) {
    error.code = std::string(*code);
  }
  return error;
}

ApiError NotFoundError(std::string message, std::string code) {
  return Make(404, "invalid_request_error", std::move(message),
              std::move(code));
}

ApiError MethodNotAllowedError(std::string message) {
  return Make(405, "invalid_request_error", std::move(message),
              "method_not_allowed");
}

ApiError BodyTooLargeError(std::string message) {
  return Make(413, "invalid_request_error", std::move(message),
              "request_too_large");
}

std::string ErrorBody(const ApiError& error) {
  nlohmann::ordered_json body = {
      {"error",
       {{"message", error.message},
        {"type", error.type},
        {"param", error.param.empty() ? nlohmann::ordered_json()
                                      : nlohmann::ordered_json(error.param)},
        {"code", error.code.empty() ? nlohmann::ordered_json()
                                    : nlohmann::ordered_json(error.code)}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace tvq::service::http
