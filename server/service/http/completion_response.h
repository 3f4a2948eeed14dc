// The JSON OpenAI clients expect back from /v1/completions and
// /v1/chat/completions: whole responses ("text_completion",
// "chat.completion"), stream chunks ("text_completion",
// "chat.completion.chunk"), the usage object and logprobs in each API's
// shape. Pure functions of the scheduler's results; no transport here.
#ifndef TVQ_SERVER_SERVICE_HTTP_COMPLETION_RESPONSE_H_
#define TVQ_SERVER_SERVICE_HTTP_COMPLETION_RESPONSE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/scheduler/request.h"
#include "server/service/http/completion_request.h"
#include "server/text/tokenizer.h"

namespace tvq::service::http {

using Json = nlohmann::ordered_json;

// "stop" (stop sequence, stop token, eos), "length", or "abort" (cut short
// by the server at shutdown, as vLLM names it).
std::string_view OpenAiFinishReason(scheduler::FinishReason reason);

// The prompt's logprobs (completions with echo and logprobs): its first
// token has none (null in the response), every other one is scored given
// the tokens before it.
struct PromptLogprobs {
  int32_t first_token = 0;
  std::vector<scheduler::TokenLogprob> rest;
};

// What one choice produced (a whole response, or one stream delta).
struct ChoiceDelta {
  std::string text;
  std::vector<scheduler::TokenLogprob> logprobs;
  // Set on the delta that carries the echoed prompt, when it is scored.
  const PromptLogprobs* prompt = nullptr;
};

// Shapes the responses of one request.
class ResponseShaper {
 public:
  ResponseShaper(ApiKind kind, std::string id, int64_t created,
                 std::string model, const runtime::Tokenizer* tokenizer,
                 bool logprobs);

  const std::string& id() const { return id_; }

  // The whole response of a unary request: `outputs[i]` and `completions[i]`
  // are choice i's; `echo_text` goes before each choice's text, `prompt`
  // (may be null) before its logprobs.
  Json Response(const std::vector<ChoiceDelta>& outputs,
                const std::vector<scheduler::Completion>& completions,
                const std::string& echo_text, const PromptLogprobs* prompt,
                int prompt_tokens, int cached_tokens) const;

  // One stream chunk of choice `index`. `text_offset` (completions
  // logprobs) is where the delta starts in the choice's text, in
  // characters; it is advanced past the delta. `finish` closes the choice.
  // `role` (chat): the first chunk of a choice carries the role.
  Json Chunk(int index, const ChoiceDelta& delta, int64_t* text_offset,
             const scheduler::Completion* finish, bool role,
             bool include_usage) const;
  // The last chunk with include_usage: no choices, the usage.
  Json UsageChunk(int prompt_tokens, int completion_tokens,
                  int cached_tokens) const;

 private:
  Json Envelope(bool chunk) const;
  Json CompletionLogprobs(const std::vector<scheduler::TokenLogprob>& entries,
                          const PromptLogprobs* prompt,
                          int64_t* text_offset) const;
  Json ChatLogprobs(const std::vector<scheduler::TokenLogprob>& entries) const;
  // The token's bytes as the tokenizer decodes it alone.
  std::string TokenBytes(int32_t id) const;
  // Its text for logprobs: the bytes when they are valid UTF-8, else
  // "bytes:\xNN..." (as OpenAI spells partial characters).
  std::string TokenText(int32_t id) const;

  const ApiKind kind_;
  const std::string id_;
  const int64_t created_;
  const std::string model_;
  const runtime::Tokenizer* const tokenizer_;
  const bool logprobs_;
};

// usage{prompt_tokens, completion_tokens, total_tokens,
// prompt_tokens_details{cached_tokens}}. `cached_tokens`: the prompt tokens
// not recomputed (automatic prefix reuse, usage.cached_tokens).
Json UsageJson(int prompt_tokens, int completion_tokens, int cached_tokens);

// Characters (code points) in UTF-8 `text`: bytes that do not continue a
// sequence.
int64_t CountCharacters(std::string_view text);

// JSON text for the wire: invalid UTF-8 becomes U+FFFD.
std::string DumpJson(const Json& value);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_COMPLETION_RESPONSE_H_
