// Counts every tvq.v1.TextGeneration RPC by method and final status code for
// tvq_requests_total, without touching the handlers: a gRPC server
// interceptor sees the status each call sends (PRE_SEND_STATUS) and reports
// it through the plain metrics::RpcMetrics interface (no gRPC types leave
// server/service/). Calls to other services (health, reflection) are not
// counted.
//
// The same interceptor gives calls whose request never reached a handler
// the status the client should see. gRPC 1.51's callback API answers any
// request it cannot parse with UNIMPLEMENTED "" (the parse error is
// dropped):
//   - a string field with invalid UTF-8 (proto3 strings must be UTF-8)
//     becomes INVALID_ARGUMENT naming the field (protobuf logs the field
//     name; InstallProtobufLogFilter catches it and rate-limits the line);
//   - any other unparsable message becomes INVALID_ARGUMENT naming the
//     message type;
//   - a call whose deadline passed first is DEADLINE_EXCEEDED, which is
//     what its client was told; it is counted as such (so is a call the
//     server saw cancelled by the deadline).
#ifndef TVQ_SERVER_SERVICE_GRPC_RPC_METRICS_INTERCEPTOR_H_
#define TVQ_SERVER_SERVICE_GRPC_RPC_METRICS_INTERCEPTOR_H_

#include "grpcpp/support/server_interceptor.h"
#include "server/metrics/rpc_metrics.h"

namespace tvq::service {

// Register with ServerBuilder::experimental().SetInterceptorCreators.
class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` must outlive the server; null = fix statuses, count nothing.
  explicit RpcMetricsInterceptorFactory(metrics::RpcMetrics* metrics)
      : metrics_(metrics) {}

  // Null (no interception) for methods outside tvq.v1.TextGeneration.
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  metrics::RpcMetrics* const metrics_;
};

// Replaces protobuf's log handler (once per process): the "String field
// 'X' contains invalid UTF-8 data when parsing" error is recorded for the
// interceptor above and printed at most once per minute, with a count of
// those not printed; every other protobuf message is printed as before.
void InstallProtobufLogFilter();

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_RPC_METRICS_INTERCEPTOR_H_
