#include "server/service/http/chat_template.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "server/base/str_cat.h"
#include "server/base/strict_json.h"
#include "server/service/http/http_errors.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;
namespace {

template <typename Strings>
std::string Join(const Strings& strings) {
  std::string out;
  for (const auto& text : strings) {
    if (!out.empty()) out += ", ";
    out += text;
  }
  return out;
}

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(StrCat(kChatTemplateFile, ": ", what));
}

absl::StatusOr<std::string> StringAt(const nlohmann::json& object,
                                     const std::string& key,
                                     const std::string& name) {
  auto it = object.find(key);
  if (it == object.end()) return std::string();
  if (!it->is_string()) {
    return Bad(
        StrCat(name, " must be a string, got ", runtime::DescribeJson(*it)));
  }
  return it->get<std::string>();
}

absl::Status OnlyKeys(const nlohmann::json& object,
                      std::initializer_list<std::string_view> keys,
                      std::string_view where) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    bool known = false;
    for (std::string_view key : keys) known = known || key == it.key();
    if (!known) {
      return Bad(StrCat("unknown key \"", it.key(), "\" in ", where,
                        " (known: ", Join(keys), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ChatTemplate> ParseChatTemplate(std::string_view text) {
  absl::StatusOr<nlohmann::json> parsed = runtime::ParseStrictJson(
      text, absl::StatusCode::kInvalidArgument, kChatTemplateFile);
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& root = *parsed;
  if (!root.is_object()) return Bad("the top level must be an object");
  if (absl::Status status = OnlyKeys(
          root, {"roles", "generation_prefix", "stop"}, "the top level");
      !status.ok()) {
    return status;
  }
  ChatTemplate out;
  auto roles = root.find("roles");
  if (roles == root.end() || !roles->is_object() || roles->empty()) {
    return Bad(
        "\"roles\" must be a non-empty object of role -> "
        "{\"prefix\", \"suffix\"}");
  }
  for (auto it = roles->begin(); it != roles->end(); ++it) {
    const std::string name = StrCat("roles.", it.key());
    if (!it->is_object()) return Bad(StrCat(name, " must be an object"));
    if (absl::Status status = OnlyKeys(*it, {"prefix", "suffix"}, name);
        !status.ok()) {
      return status;
    }
    ChatRole role;
    absl::StatusOr<std::string> prefix =
        StringAt(*it, "prefix", StrCat(name, ".prefix"));
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<std::string> suffix =
        StringAt(*it, "suffix", StrCat(name, ".suffix"));
    if (!suffix.ok()) return suffix.status();
    role.prefix = *std::move(prefix);
    role.suffix = *std::move(suffix);
    out.roles.emplace(it.key(), std::move(role));
  }
  absl::StatusOr<std::string> generation_prefix =
      StringAt(root, "generation_prefix", "generation_prefix");
  if (!generation_prefix.ok()) return generation_prefix.status();
  out.generation_prefix = *std::move(generation_prefix);
  if (auto stop = root.find("stop"); stop != root.end()) {
    if (!stop->is_array()) return Bad("\"stop\" must be an array of strings");
    for (const nlohmann::json& entry : *stop) {
      if (!entry.is_string() || entry.get<std::string>().empty()) {
        return Bad("\"stop\" must hold non-empty strings");
      }
      out.stop.push_back(entry.get<std::string>());
    }
  }
  return out;
}

absl::StatusOr<std::optional<ChatTemplate>> LoadChatTemplate(
    const std::string& model_dir) {
  const std::string path = StrCat(model_dir, "/", kChatTemplateFile);
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    if (errno == ENOENT) return std::nullopt;
    return absl::FailedPreconditionError(
        StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << file.rdbuf();
  absl::StatusOr<ChatTemplate> parsed = ParseChatTemplate(text.str());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        StrCat(path, ": ", parsed.status().message()));
  }
  return *std::move(parsed);
}

absl::StatusOr<std::string> RenderChat(
    const ChatTemplate& chat_template,
    const std::vector<ChatMessage>& messages) {
  std::string prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    auto role = chat_template.roles.find(messages[i].role);
    if (role == chat_template.roles.end()) {
      std::vector<std::string> known;
      for (const auto& entry : chat_template.roles)
        known.push_back(entry.first);
      const std::string field = StrCat("messages[", i, "].role");
      return InvalidField(
          field, StrCat(field, " \"", messages[i].role,
                        "\" is not a role of this model's chat template "
                        "(known: ",
                        Join(known), ")"));
    }
    prompt += role->second.prefix;
    prompt += messages[i].content;
    prompt += role->second.suffix;
  }
  prompt += chat_template.generation_prefix;
  return prompt;
}

}  // namespace tvq::service::http
