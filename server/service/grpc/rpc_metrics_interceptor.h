// Counts every tvq.v1.TextGeneration RPC by method and final status code for
// tvq_requests_total, without touching the handlers: a gRPC server
// interceptor sees the status each call sends (PRE_SEND_STATUS) and reports
// it through the plain metrics::RpcMetrics interface (no gRPC types leave
// server/service/). Calls to other services (health, reflection) are not
// counted.
#ifndef TVQ_SERVER_SERVICE_GRPC_RPC_METRICS_INTERCEPTOR_H_
#define TVQ_SERVER_SERVICE_GRPC_RPC_METRICS_INTERCEPTOR_H_

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics/rpc_metrics.h"

namespace tvq::service {

// Register with ServerBuilder::experimental().SetInterceptorCreators.
class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` must outlive the server.
  explicit RpcMetricsInterceptorFactory(metrics::RpcMetrics* metrics)
      : metrics_(metrics) {}

  // Null (no interception) for methods outside tvq.v1.TextGeneration.
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  metrics::RpcMetrics* const metrics_;
};

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_RPC_METRICS_INTERCEPTOR_H_
