#include "server/service/routing/session_key.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/sessions/session_store.h"

namespace tvq::service::routing {

absl::StatusOr<std::optional<SessionKey>> FindSessionKey(
    absl::FunctionRef<std::string_view(std::string_view)> lookup) {
  for (std::string_view header : kSessionKeyHeaders) {
    const std::string_view value = lookup(header);
    if (value.empty()) continue;
    SessionKey key{header, std::string(value)};
    if (absl::Status valid = sessions::SessionStore::CheckId(
            key.value, absl::StrFormat("the %s header", header));
        !valid.ok()) {
      return valid;
    }
    return key;
  }
  return std::nullopt;
}

absl::StatusOr<std::string> CombineSessionId(
    const std::optional<SessionKey>& key, std::string_view field_value,
    std::string_view field_name) {
  if (!key.has_value()) return std::string(field_value);
  if (field_value.empty() || field_value == key->value) return key->value;
  return absl::InvalidArgumentError(absl::StrFormat(
      "the %s header names session \"%s\" but %s is \"%s\": send one of "
      "them, or the same id in both",
      key->header, key->value, field_name, field_value));
}

}  // namespace tvq::service::routing
