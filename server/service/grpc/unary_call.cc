#include "server/service/grpc/unary_call.h"

#include <chrono>

#include "server/service/grpc/status_to_grpc.h"

namespace tvq::service {

absl::Time Deadline(const grpc::CallbackServerContext* context) {
  const std::chrono::system_clock::time_point deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  return FinishNow(context, ToGrpcStatus(status));
}

ValidationContext Validation(const core::Engine& engine) {
  ValidationContext context;
  context.config = &engine.model_config();
  context.tokenizer = &engine.tokenizer();
  context.limits = engine.config().limits;
  return context;
}

}  // namespace tvq::service
