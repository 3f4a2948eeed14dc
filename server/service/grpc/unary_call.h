// Small pieces every RPC handler of GenerationService uses (the generation
// RPCs in generation_service.cc, the session RPCs in session_rpcs.cc).
#ifndef TVQ_SERVER_SERVICE_GRPC_UNARY_CALL_H_
#define TVQ_SERVER_SERVICE_GRPC_UNARY_CALL_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/engine.h"
#include "server/service/grpc/request_validation.h"

namespace tvq::service {

// The call's deadline; InfiniteFuture when the client set none.
absl::Time Deadline(const grpc::CallbackServerContext* context);

// A unary call finished at once with `status` (the default reactor).
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const grpc::Status& status);
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status);

// What request validation checks against: the engine's model, tokenizer
// and limits.
ValidationContext Validation(const core::Engine& engine);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_UNARY_CALL_H_
