#include "server/service/grpc/rpc_metrics_interceptor.h"

#include <cstring>
#include <string>
#include <utility>

#include "grpcpp/support/interceptor.h"

namespace tvq::service {
namespace {

constexpr char kServicePrefix[] = "/tvq.v1.TextGeneration/";

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(metrics::RpcMetrics* metrics, std::string method)
      : metrics_(metrics), method_(std::move(method)) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->OnRpcFinished(
          method_, static_cast<int>(methods->GetSendStatus().error_code()));
    }
    methods->Proceed();
  }

 private:
  metrics::RpcMetrics* const metrics_;
  const std::string method_;
};

}  // namespace

grpc::experimental::Interceptor*
RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  if (metrics_ == nullptr || method == nullptr ||
      std::strncmp(method, kServicePrefix, sizeof(kServicePrefix) - 1) != 0) {
    return nullptr;
  }
  return new RpcMetricsInterceptor(metrics_,
                                   method + sizeof(kServicePrefix) - 1);
}

}  // namespace tvq::service
