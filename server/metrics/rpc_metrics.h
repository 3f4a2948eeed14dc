// What the service layer reports about each RPC, in plain types: no gRPC and
// no Prometheus types cross this interface. ServerMetrics implements it; the
// service's interceptor (server/service/rpc_metrics_interceptor.h) calls it.
#ifndef TVQ_SERVER_METRICS_RPC_METRICS_H_
#define TVQ_SERVER_METRICS_RPC_METRICS_H_

#include <string_view>

namespace tvq::metrics {

class RpcMetrics {
 public:
  virtual ~RpcMetrics() = default;
  // One RPC ended. `method` is its name in tvq.v1.TextGeneration
  // ("Generate", "GenerateStream", ...); `code` the gRPC status code it ended
  // with (0 = OK ... 16 = UNAUTHENTICATED; anything else counts as UNKNOWN).
  // Thread-safe and non-blocking.
  virtual void OnRpcFinished(std::string_view method, int code) = 0;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_RPC_METRICS_H_
