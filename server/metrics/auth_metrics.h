// Authentication failures of every front end (docs/metrics.md):
//   tvq_auth_failures_total{frontend="grpc"|"http", reason="missing"|"invalid"}
// A call refused for its key is counted here once. A refused gRPC call never
// reaches the service (tvq_requests_total does not see it); a refused HTTP
// request is also a 401 in tvq_requests_total{frontend="http"} (code
// UNAUTHENTICATED), which counts responses.
// AuthObserver is the plain interface the front ends report to; AuthMetrics
// implements it with prometheus-cpp on a registry of its own.
#ifndef TVQ_SERVER_METRICS_AUTH_METRICS_H_
#define TVQ_SERVER_METRICS_AUTH_METRICS_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace tvq::metrics {

// Thread-safe and non-blocking.
class AuthObserver {
 public:
  virtual ~AuthObserver() = default;
  // `frontend` "grpc" or "http"; `reason` "missing" or "invalid".
  virtual void OnAuthFailure(std::string_view frontend,
                             std::string_view reason) = 0;
};

class AuthMetrics final : public AuthObserver {
 public:
  static absl::StatusOr<std::unique_ptr<AuthMetrics>> Create();
  AuthMetrics(const AuthMetrics&) = delete;
  AuthMetrics& operator=(const AuthMetrics&) = delete;

  // What an exposer must serve besides ServerMetrics::Collectables().
  std::weak_ptr<prometheus::Collectable> Collectable() const {
    return registry_;
  }

  void OnAuthFailure(std::string_view frontend,
                     std::string_view reason) override;

 private:
  AuthMetrics();

  std::shared_ptr<prometheus::Registry> registry_;
  // [frontend][reason]: grpc/http x missing/invalid, made at start.
  prometheus::Counter* failures_[2][2] = {};
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_AUTH_METRICS_H_
