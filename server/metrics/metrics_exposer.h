// The HTTP listener Prometheus scrapes: GET /metrics on its own address
// (--metrics-address), separate from the gRPC port. Wraps prometheus-cpp's
// Exposer (civetweb) and turns its exceptions into a Status.
#ifndef TVQ_SERVER_METRICS_METRICS_EXPOSER_H_
#define TVQ_SERVER_METRICS_METRICS_EXPOSER_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace tvq::metrics {

struct HostPort {
  // An IPv4 address or a host name.
  std::string host;
  int port = 0;
};

// Parses "HOST:PORT" ("127.0.0.1:9464", "0.0.0.0:9464", "localhost:0");
// port 0 asks the system for a free port. IPv6 addresses are refused: the
// HTTP server under prometheus-cpp (Debian's civetweb) is built without
// IPv6. Errors name the address and the problem.
absl::StatusOr<HostPort> ParseHostPort(std::string_view address);

class MetricsExposer {
 public:
  // Listens on `address` and serves `collectables` (in that order) at
  // /metrics. Errors: INVALID_ARGUMENT (malformed address), UNAVAILABLE
  // (the address cannot be bound, with the system's reason, e.g. "Address
  // already in use").
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Start(
      std::string_view address,
      const std::vector<std::weak_ptr<prometheus::Collectable>>& collectables);

  MetricsExposer(const MetricsExposer&) = delete;
  MetricsExposer& operator=(const MetricsExposer&) = delete;
  // Stops listening; scrapes in progress finish first.
  ~MetricsExposer();

  // The port actually bound (useful with port 0).
  int port() const { return port_; }
  // "http://HOST:PORT/metrics".
  std::string url() const;

 private:
  MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer, HostPort bound);

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string host_;
  int port_ = 0;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_METRICS_EXPOSER_H_
