// The session key of the routing contract (docs/deploy.md, "The routing
// contract"), shared by the gRPC and HTTP front ends and free of both:
// which request headers (gRPC metadata keys) name a session, and how such a
// header combines with a session id the request carries itself.
//
//   - `x-session-id` names the session. When it is absent, the aliases
//     routers and agents send are read instead, first present wins:
//     x-dynamo-session-id, x-claude-code-session-id, x-session-affinity,
//     session-id, session_id. An empty value counts as absent.
//   - The value must be a valid session id (1 to 128 printable ASCII
//     characters without spaces); otherwise INVALID_ARGUMENT names the header.
//   - Combined with the request's own session field: header only -> the
//     header's id; field only -> the field; both equal -> that id; both set
//     and different -> INVALID_ARGUMENT naming the header, the field and
//     both values.
//
// Responses of session-bound requests carry `x-session-id` (kSessionIdHeader).
#ifndef TVQ_SERVER_SERVICE_ROUTING_SESSION_KEY_H_
#define TVQ_SERVER_SERVICE_ROUTING_SESSION_KEY_H_

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace tvq::service::routing {

// Request and response header of the session id (lower case, as on the
// wire in HTTP/2 and gRPC).
inline constexpr std::string_view kSessionIdHeader = "x-session-id";

// Request headers read as the session key, in priority order.
inline constexpr std::array<std::string_view, 6> kSessionKeyHeaders = {
    "x-session-id",              // llm-d session_id strategy, nginx/Envoy hash
    "x-dynamo-session-id",       // NVIDIA Dynamo session affinity
    "x-claude-code-session-id",  // Claude Code
    "x-session-affinity",        // OpenCode
    "session-id",                // Codex
    "session_id",                // Codex
};

// A session key found in a request's headers.
struct SessionKey {
  // The header it came from (one of kSessionKeyHeaders).
  std::string_view header;
  std::string value;
};

// Looks each of kSessionKeyHeaders up through `lookup` (a lower-case name
// -> the first value of that header, empty when absent) and returns the
// first non-empty one, validated; nullopt when there is none.
absl::StatusOr<std::optional<SessionKey>> FindSessionKey(
    absl::FunctionRef<std::string_view(std::string_view)> lookup);

// The session id of a request: `key` (from FindSessionKey) combined with the
// request's own field `field_name` holding `field_value` (empty = unset), by
// the rules above. Empty when neither names a session. The field's value is
// not validated here (the request's own validation does it).
absl::StatusOr<std::string> CombineSessionId(
    const std::optional<SessionKey>& key, std::string_view field_value,
    std::string_view field_name);

}  // namespace tvq::service::routing

#endif  // TVQ_SERVER_SERVICE_ROUTING_SESSION_KEY_H_
