// Parses and validates the bodies of POST /v1/completions and
// POST /v1/chat/completions into scheduler requests: one
// scheduler::GenerationRequest per choice (n > 1: seeds seed, seed + 1, ...),
// plus what the response needs (stream, echo, logprobs). Every problem is a
// 400 naming the field (InvalidField); a field the engine cannot honour is
// refused, never ignored; a `model` other than the served one is 404
// model_not_found. docs/http.md lists every field, its default and range.
#ifndef TVQ_SERVER_SERVICE_HTTP_COMPLETION_REQUEST_H_
#define TVQ_SERVER_SERVICE_HTTP_COMPLETION_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/core/request_limits.h"
#include "server/model/model_config.h"
#include "server/scheduler/request.h"
#include "server/service/http/chat_template.h"
#include "server/text/tokenizer.h"

namespace tvq::service::http {

// Choices one request may ask for (n).
inline constexpr int kMaxChoices = 64;

// What validation checks against.
struct RequestContext {
  const runtime::ModelConfig* config = nullptr;
  const runtime::Tokenizer* tokenizer = nullptr;
  core::RequestLimits limits;
  // The only `model` accepted.
  std::string served_model_name;
  // Null: the model has no chat template (chat answers 400).
  const ChatTemplate* chat_template = nullptr;
  // The seed of requests that set none.
  uint64_t default_seed = 0;
};

enum class ApiKind { kCompletion, kChat };

struct CompletionPlan {
  ApiKind kind = ApiKind::kCompletion;
  // Choice i is choices[i]; each has its own request_id and seed.
  std::vector<scheduler::GenerationRequest> choices;
  bool stream = false;
  // stream_options.include_usage.
  bool include_usage = false;
  // Completions: the prompt's text goes before each choice's text.
  bool echo = false;
  std::string echo_text;
  // Completions with echo and logprobs: the prompt's own logprobs come
  // first (a score of the prompt, before the generations start).
  bool score_prompt = false;
  // False for max_tokens 0 (echo only): nothing is generated.
  bool generate = true;
  // Completions: logprobs = N (>= 0); chat: logprobs = true, top_logprobs.
  bool logprobs = false;
  int top_logprobs = 0;
};

absl::StatusOr<CompletionPlan> ParseCompletionRequest(
    const nlohmann::json& body, const RequestContext& context);

absl::StatusOr<CompletionPlan> ParseChatCompletionRequest(
    const nlohmann::json& body, const RequestContext& context);

// POST /v1/responses: this turn's generation (its prompt is the turn's new
// tokens: `instructions` then the text of `input`, without the eos prefix,
// which the session adds to a conversation's first tokens), plus what the
// response echoes back. Sampling fields and the vLLM extras as completions
// take them; `max_output_tokens` for max_tokens; n must be 1.
struct ResponsesPlan {
  scheduler::GenerationRequest request;
  bool stream = false;
  bool store = true;
  // Empty: a new conversation.
  std::string previous_response_id;
  std::optional<std::string> instructions;
  std::optional<int> max_output_tokens;
  double temperature = 1.0;
  double top_p = 1.0;
  nlohmann::json metadata = nlohmann::json::object();
  // Message items rendered by the model's chat template (whose stop
  // sequences were added); false: plain text.
  bool chat_template_applied = false;
};

absl::StatusOr<ResponsesPlan> ParseResponsesRequest(
    const nlohmann::json& body, const RequestContext& context);

// The `model` field of any request: absent, or the served name (else 404).
absl::Status CheckModel(const nlohmann::json* model,
                        const RequestContext& context);

// A text prompt as the model sees it: the eos id (when `eos_prefix`), then
// the text's tokens. `field` names the text in errors. Bounded by
// --max-prompt-tokens.
absl::StatusOr<std::vector<int32_t>> TokenizePrompt(
    const std::string& text, bool eos_prefix, std::string_view field,
    const RequestContext& context);

// A token-id array field: each an integer id of the model's vocabulary.
absl::StatusOr<std::vector<int32_t>> TokenIdArray(const nlohmann::json& value,
                                                  std::string_view field,
                                                  int n_vocab);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_COMPLETION_REQUEST_H_
