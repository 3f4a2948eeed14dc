// The one mapping from absl::Status to grpc::Status (the codes share their
// numeric values; the message is kept).
#ifndef TVQ_SERVER_SERVICE_GRPC_STATUS_TO_GRPC_H_
#define TVQ_SERVER_SERVICE_GRPC_STATUS_TO_GRPC_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace tvq::service {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_STATUS_TO_GRPC_H_
