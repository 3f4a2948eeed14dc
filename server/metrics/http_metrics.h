// Metrics of the HTTP front end (server/service/http), added beside the
// scheduler-level families, which already count every request once whatever
// front end it came through (docs/metrics.md, "HTTP front end"):
//   tvq_http_requests_total{route, code}  responses by route and HTTP status
//   tvq_http_active_streams               SSE responses being written
//   tvq_http_open_connections             HTTP connections open
// HttpObserver is the plain interface the front end reports to; HttpMetrics
// implements it with prometheus-cpp on a registry of its own.
#ifndef TVQ_SERVER_METRICS_HTTP_METRICS_H_
#define TVQ_SERVER_METRICS_HTTP_METRICS_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

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

class HttpMetrics final : public HttpObserver {
 public:
  static absl::StatusOr<std::unique_ptr<HttpMetrics>> Create();
  HttpMetrics(const HttpMetrics&) = delete;
  HttpMetrics& operator=(const HttpMetrics&) = delete;

  // What an exposer must serve besides ServerMetrics::Collectables().
  std::weak_ptr<prometheus::Collectable> Collectable() const {
    return registry_;
  }

  void OnHttpResponse(std::string_view route, int status) override;
  void OnStreamOpened() override { active_streams_->Increment(); }
  void OnStreamClosed() override { active_streams_->Decrement(); }
  void OnConnectionOpened() override { open_connections_->Increment(); }
  void OnConnectionClosed() override { open_connections_->Decrement(); }

 private:
  HttpMetrics();
  void Register();

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Gauge* active_streams_ = nullptr;
  prometheus::Gauge* open_connections_ = nullptr;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_HTTP_METRICS_H_
