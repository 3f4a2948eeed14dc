// Metrics of the HTTP front end (server/service/http). Each response is
// counted once, in the shared request family of ServerMetrics:
//   tvq_requests_total{frontend="http", method=ROUTE, code=CODE}
// where CODE is the gRPC code name of the HTTP status (GrpcCodeOfHttpStatus;
// docs/metrics.md has the table), so that one query covers both front ends.
// Two gauges of the transport are HTTP's own:
//   tvq_http_active_streams               SSE responses being written
//   tvq_http_open_connections             HTTP connections open
// HttpObserver is the plain interface the front end reports to; HttpMetrics
// implements it with prometheus-cpp.
#ifndef TVQ_SERVER_METRICS_HTTP_METRICS_H_
#define TVQ_SERVER_METRICS_HTTP_METRICS_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"

namespace tvq::metrics {

// Thread-safe and non-blocking; called from the HTTP threads.
class HttpObserver {
 public:
  virtual ~HttpObserver() = default;
  // A response ended (written, or abandoned by its client): `route` is the
  // route pattern ("/v1/completions", "other"), `status` the HTTP status
  // (499 when the client went away first).
  virtual void OnHttpResponse(std::string_view route, int status) = 0;
  virtual void OnStreamOpened() = 0;
  virtual void OnStreamClosed() = 0;
  virtual void OnConnectionOpened() = 0;
  virtual void OnConnectionClosed() = 0;
};

// The gRPC code name an HTTP status is counted under: 200-299 "OK", 400
// "INVALID_ARGUMENT", 401 "UNAUTHENTICATED", 403 "PERMISSION_DENIED", 404
// "NOT_FOUND", 405 "UNIMPLEMENTED", 409 "FAILED_PRECONDITION", 413, 429 and
// 431 "RESOURCE_EXHAUSTED", 499 "CANCELLED", 500 "INTERNAL", 501
// "UNIMPLEMENTED", 503 "UNAVAILABLE", 504 "DEADLINE_EXCEEDED"; any other 4xx
// "INVALID_ARGUMENT", anything else "UNKNOWN". The inverse of the HTTP front
// end's error mapping (service/http/http_errors.cc).
std::string_view GrpcCodeOfHttpStatus(int status);

class HttpMetrics final : public HttpObserver {
 public:
  // Counts responses into `requests` (which must outlive this object).
  static absl::StatusOr<std::unique_ptr<HttpMetrics>> Create(
      ServerMetrics& requests);
  HttpMetrics(const HttpMetrics&) = delete;
  HttpMetrics& operator=(const HttpMetrics&) = delete;

  // What an exposer must serve besides ServerMetrics::Collectables(): the
  // two gauges.
  std::weak_ptr<prometheus::Collectable> Collectable() const {
    return registry_;
  }

  void OnHttpResponse(std::string_view route, int status) override;
  void OnStreamOpened() override { active_streams_->Increment(); }
  void OnStreamClosed() override { active_streams_->Decrement(); }
  void OnConnectionOpened() override { open_connections_->Increment(); }
  void OnConnectionClosed() override { open_connections_->Decrement(); }

 private:
  explicit HttpMetrics(ServerMetrics& requests);
  void Register();

  ServerMetrics& requests_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* active_streams_ = nullptr;
  prometheus::Gauge* open_connections_ = nullptr;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_HTTP_METRICS_H_
