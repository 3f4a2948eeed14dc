// The chat template a model directory may declare, for /v1/chat/completions.
// Transformer-VQ models are mostly base language models, so the template is
// optional: a model directory without `chat_template.json` serves no chat.
//
// chat_template.json (docs/http.md, "Chat templates"):
//   {
//     "roles": {
//       "system":    {"prefix": "System: ",    "suffix": "\n"},
//       "user":      {"prefix": "User: ",      "suffix": "\n"},
//       "assistant": {"prefix": "Assistant: ", "suffix": "\n"}
//     },
//     "generation_prefix": "Assistant:",
//     "stop": ["\nUser:"]
//   }
// The prompt is, for each message in order, its role's prefix + content +
// suffix, then generation_prefix; the model's eos id goes first as for every
// text prompt. `stop` sequences are added to every chat request's own. Only
// the roles listed are accepted. Unknown keys are an error.
#ifndef TVQ_SERVER_SERVICE_HTTP_CHAT_TEMPLATE_H_
#define TVQ_SERVER_SERVICE_HTTP_CHAT_TEMPLATE_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tvq::service::http {

inline constexpr char kChatTemplateFile[] = "chat_template.json";

struct ChatRole {
  std::string prefix;
  std::string suffix;
};

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplate {
  std::map<std::string, ChatRole, std::less<>> roles;
  std::string generation_prefix;
  std::vector<std::string> stop;
};

// Parses the text of a chat_template.json; errors name the key.
absl::StatusOr<ChatTemplate> ParseChatTemplate(std::string_view text);

// <model_dir>/chat_template.json: nullopt when the file does not exist; an
// error (naming the file) when it cannot be read or parsed.
absl::StatusOr<std::optional<ChatTemplate>> LoadChatTemplate(
    const std::string& model_dir);

// The prompt text of `messages`. A role the template does not list is an
// InvalidField error naming messages[i].role.
absl::StatusOr<std::string> RenderChat(
    const ChatTemplate& chat_template,
    const std::vector<ChatMessage>& messages);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_CHAT_TEMPLATE_H_
