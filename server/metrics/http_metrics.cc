#include "server/metrics/http_metrics.h"

#include <exception>
#include <string>

#include "server/base/str_cat.h"

namespace tvq::metrics {

using ::tvq::runtime::StrCat;

absl::StatusOr<std::unique_ptr<HttpMetrics>> HttpMetrics::Create() {
  std::unique_ptr<HttpMetrics> metrics(new HttpMetrics());
  try {
    metrics->Register();
  } catch (const std::exception& error) {
    return absl::InternalError(
        StrCat("registering the HTTP metrics: ", error.what()));
  }
  return metrics;
}

HttpMetrics::HttpMetrics()
    : registry_(std::make_shared<prometheus::Registry>()) {}

void HttpMetrics::Register() {
  requests_ = &prometheus::BuildCounter()
                   .Name("tvq_http_requests_total")
                   .Help(
                       "HTTP responses of the OpenAI-compatible front end, by "
                       "route and HTTP status code (499: the client went "
                       "away first).")
                   .Register(*registry_);
  // Pre-created so that rate() sees them from the first scrape.
  for (const char* route : {"/v1/completions", "/v1/chat/completions"}) {
    requests_->Add({{"route", route}, {"code", "200"}});
  }
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
  try {
    requests_->Add({{"route", std::string(route)}, {"code", StrCat(status)}})
        .Increment();
  } catch (const std::exception&) {
    // Label values cannot be refused; nothing else throws here.
  }
}

}  // namespace tvq::metrics
