#include "server/service/grpc/session_metadata.h"

#include <optional>

#include "server/service/routing/session_key.h"
#include "server/sessions/session_store.h"

namespace tvq::service {

absl::StatusOr<std::string> SessionIdOf(
    const grpc::CallbackServerContext& context, std::string_view field_value,
    std::string_view field_name) {
  const auto& metadata = context.client_metadata();
  absl::StatusOr<std::optional<routing::SessionKey>> key =
      routing::FindSessionKey([&metadata](std::string_view name) {
        const auto found =
            metadata.find(grpc::string_ref(name.data(), name.size()));
        if (found == metadata.end()) return std::string_view();
        return std::string_view(found->second.data(), found->second.size());
      });
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> session_id =
      routing::CombineSessionId(*key, field_value, field_name);
  if (!session_id.ok() || session_id->empty()) return session_id;
  if (absl::Status valid =
          sessions::SessionStore::CheckId(*session_id, field_name);
      !valid.ok()) {
    return valid;
  }
  return session_id;
}

void AnnounceSession(grpc::CallbackServerContext* context,
                     const std::string& session_id) {
  if (session_id.empty()) return;
  const std::string header(routing::kSessionIdHeader);
  context->AddInitialMetadata(header, session_id);
  context->AddTrailingMetadata(header, session_id);
}

}  // namespace tvq::service
