// Errors of tvq-client: gRPC statuses as absl::Status (same codes), and
// usage errors, which make the program print the command's usage text.
#ifndef TVQ_CLIENT_CLIENT_STATUS_H_
#define TVQ_CLIENT_CLIENT_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace tvq::client {

// The same code and message (gRPC and Abseil share the code numbers).
absl::Status FromGrpcStatus(const grpc::Status& status);

// "INVALID_ARGUMENT", "CANCELLED", ... for a gRPC status code.
std::string StatusCodeName(grpc::StatusCode code);

// An InvalidArgument error marked as a command-line mistake.
absl::Status UsageError(const std::string& message);
bool IsUsageError(const absl::Status& status);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_CLIENT_STATUS_H_
