#include "server/metrics/http_metrics.h"

#include <exception>
#include <string>

#include "server/base/str_cat.h"

namespace tvq::metrics {

using ::tvq::runtime::StrCat;

std::string_view GrpcCodeOfHttpStatus(int status) {
  if (status >= 200 && status < 300) return "OK";
  switch (status) {
    case 400:
      return "INVALID_ARGUMENT";
    case 401:
      return "UNAUTHENTICATED";
    case 403:
      return "PERMISSION_DENIED";
    case 404:
      return "NOT_FOUND";
    case 405:
    case 501:
      return "UNIMPLEMENTED";
    case 409:
      return "FAILED_PRECONDITION";
    case 413:
    case 429:
    case 431:
      return "RESOURCE_EXHAUSTED";
    case 499:
      return "CANCELLED";
    case 500:
      return "INTERNAL";
    case 503:
      return "UNAVAILABLE";
    case 504:
      return "DEADLINE_EXCEEDED";
    default:
      return status >= 400 && status < 500 ? "INVALID_ARGUMENT" : "UNKNOWN";
  }
}

absl::StatusOr<std::unique_ptr<HttpMetrics>> HttpMetrics::Create(
    ServerMetrics& requests) {
  std::unique_ptr<HttpMetrics> metrics(new HttpMetrics(requests));
  try {
    metrics->Register();
  } catch (const std::exception& error) {
    return absl::InternalError(
        StrCat("registering the HTTP metrics: ", error.what()));
  }
  return metrics;
}

HttpMetrics::HttpMetrics(ServerMetrics& requests)
    : requests_(requests),
      registry_(std::make_shared<prometheus::Registry>()) {}

void HttpMetrics::Register() {
  active_streams_ = &prometheus::BuildGauge()
                         .Name("tvq_http_active_streams")
                         .Help("Server-Sent Events responses being written.")
                         .Register(*registry_)
                         .Add({});
  open_connections_ = &prometheus::BuildGauge()
                           .Name("tvq_http_open_connections")
                           .Help("HTTP connections open.")
                           .Register(*registry_)
                           .Add({});
}

void HttpMetrics::OnHttpResponse(std::string_view route, int status) {
  requests_.CountRequest(Frontend::kHttp, route, GrpcCodeOfHttpStatus(status));
}

}  // namespace tvq::metrics
