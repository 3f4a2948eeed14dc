// The routing contract over gRPC (server/service/routing/session_key.h):
// the session key in a call's metadata, and `x-session-id` in the initial
// and trailing metadata of the responses of session-bound calls.
#ifndef TVQ_SERVER_SERVICE_GRPC_SESSION_METADATA_H_
#define TVQ_SERVER_SERVICE_GRPC_SESSION_METADATA_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tvq::service {

// The session id of a call: the session key of its metadata combined with
// the request's `field_name` (holding `field_value`, empty = unset).
// Validated when not empty; empty when neither names a session.
absl::StatusOr<std::string> SessionIdOf(
    const grpc::CallbackServerContext& context, std::string_view field_value,
    std::string_view field_name);

// Adds `x-session-id: session_id` to the call's initial and trailing
// metadata; nothing when `session_id` is empty. Call it before the initial
// metadata goes out (before the first write, or before Finish of a unary
// call), at most once per call.
void AnnounceSession(grpc::CallbackServerContext* context,
                     const std::string& session_id);

// `request`, or, when the metadata named the session and the request did
// not, a copy of it in `storage` with its session_id set to `session_id`.
template <typename Request>
const Request& WithSessionId(const Request& request,
                             const std::string& session_id, Request& storage) {
  if (session_id == request.session_id()) return request;
  storage = request;
  storage.set_session_id(session_id);
  return storage;
}

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_SESSION_METADATA_H_
