#include "server/service/http/completion_response.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "server/text/utf8.h"

namespace tvq::service::http {

std::string_view OpenAiFinishReason(scheduler::FinishReason reason) {
  switch (reason) {
    case scheduler::FinishReason::kLength:
      return "length";
    case scheduler::FinishReason::kStopSequence:
    case scheduler::FinishReason::kEos:
    case scheduler::FinishReason::kStopToken:
      return "stop";
    case scheduler::FinishReason::kCancelled:
      return "abort";
    case scheduler::FinishReason::kUnspecified:
      break;
  }
  return "stop";
}

int64_t CountCharacters(std::string_view text) {
  int64_t count = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
  }
  return count;
}

std::string DumpJson(const Json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Json UsageJson(int prompt_tokens, int completion_tokens, int cached_tokens) {
  return Json{{"prompt_tokens", prompt_tokens},
              {"completion_tokens", completion_tokens},
              {"total_tokens", prompt_tokens + completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

namespace {

// vLLM's stop_reason: the stop string or token id that ended the choice;
// null otherwise.
Json StopReason(const scheduler::Completion& completion) {
  switch (completion.finish_reason) {
    case scheduler::FinishReason::kStopSequence:
      return completion.matched_stop_sequence;
    case scheduler::FinishReason::kStopToken:
      return completion.matched_stop_token_id;
    default:
      return nullptr;
  }
}

}  // namespace

ResponseShaper::ResponseShaper(ApiKind kind, std::string id, int64_t created,
                               std::string model,
                               const runtime::Tokenizer* tokenizer,
                               bool logprobs)
    : kind_(kind),
      id_(std::move(id)),
      created_(created),
      model_(std::move(model)),
      tokenizer_(tokenizer),
      logprobs_(logprobs) {}

std::string ResponseShaper::TokenBytes(int32_t id) const {
  const int32_t ids[] = {id};
  absl::StatusOr<std::string> text = tokenizer_->Decode(ids);
  return text.ok() ? *std::move(text) : std::string();
}

std::string ResponseShaper::TokenText(int32_t id) const {
  std::string bytes = TokenBytes(id);
  if (runtime::IsValidUtf8(bytes)) return bytes;
  // Part of a character (byte tokens): OpenAI's "bytes:\xNN" spelling,
  // distinct for every token.
  std::string text = "bytes:";
  for (char c : bytes) {
    text += absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
  }
  return text;
}

Json ResponseShaper::Envelope(bool chunk) const {
  const char* object =
      kind_ == ApiKind::kChat
          ? (chunk ? "chat.completion.chunk" : "chat.completion")
          : "text_completion";
  return Json{{"id", id_},
              {"object", object},
              {"created", created_},
              {"model", model_}};
}

Json ResponseShaper::CompletionLogprobs(
    const std::vector<scheduler::TokenLogprob>& entries,
    const PromptLogprobs* prompt, int64_t* text_offset) const {
  Json tokens = Json::array();
  Json token_logprobs = Json::array();
  Json top_logprobs = Json::array();
  Json offsets = Json::array();
  std::vector<const scheduler::TokenLogprob*> scored;
  if (prompt != nullptr) {
    // The first prompt token has no logprob (nothing comes before it).
    tokens.push_back(TokenText(prompt->first_token));
    token_logprobs.push_back(nullptr);
    top_logprobs.push_back(nullptr);
    offsets.push_back(*text_offset);
    *text_offset += CountCharacters(TokenBytes(prompt->first_token));
    for (const scheduler::TokenLogprob& entry : prompt->rest) {
      scored.push_back(&entry);
    }
  }
  for (const scheduler::TokenLogprob& entry : entries) scored.push_back(&entry);
  for (const scheduler::TokenLogprob* pointer : scored) {
    const scheduler::TokenLogprob& entry = *pointer;
    const std::string text = TokenText(entry.token_id);
    tokens.push_back(text);
    token_logprobs.push_back(entry.logprob);
    Json top = Json::object();
    for (const runtime::TokenAlternative& alternative :
         entry.top_alternatives) {
      const std::string key = TokenText(alternative.token_id);
      if (!top.contains(key)) top[key] = alternative.logprob;
    }
    top_logprobs.push_back(std::move(top));
    offsets.push_back(*text_offset);
    *text_offset += CountCharacters(TokenBytes(entry.token_id));
  }
  return Json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top_logprobs)},
              {"text_offset", std::move(offsets)}};
}

Json ResponseShaper::ChatLogprobs(
    const std::vector<scheduler::TokenLogprob>& entries) const {
  auto token_entry = [this](int32_t id, float logprob) {
    Json bytes = Json::array();
    for (char c : TokenBytes(id)) {
      bytes.push_back(static_cast<unsigned char>(c));
    }
    return Json{
        {"token", TokenText(id)}, {"logprob", logprob}, {"bytes", bytes}};
  };
  Json content = Json::array();
  for (const scheduler::TokenLogprob& entry : entries) {
    Json item = token_entry(entry.token_id, entry.logprob);
    Json top = Json::array();
    for (const runtime::TokenAlternative& alternative :
         entry.top_alternatives) {
      top.push_back(token_entry(alternative.token_id, alternative.logprob));
    }
    item["top_logprobs"] = std::move(top);
    content.push_back(std::move(item));
  }
  return Json{{"content", std::move(content)}, {"refusal", nullptr}};
}

Json ResponseShaper::Response(
    const std::vector<ChoiceDelta>& outputs,
    const std::vector<scheduler::Completion>& completions,
    const std::string& echo_text, const PromptLogprobs* prompt,
    int prompt_tokens, int cached_tokens) const {
  Json response = Envelope(false);
  Json choices = Json::array();
  int completion_tokens = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const scheduler::Completion& completion = completions[i];
    completion_tokens += completion.usage.generated_tokens;
    Json choice = {{"index", i}};
    if (kind_ == ApiKind::kChat) {
      choice["message"] = {{"role", "assistant"}, {"content", outputs[i].text}};
      choice["logprobs"] =
          logprobs_ ? ChatLogprobs(outputs[i].logprobs) : Json(nullptr);
    } else {
      choice["text"] = echo_text + outputs[i].text;
      // Offsets count from the start of the echoed prompt, whose tokens come
      // first when it is scored.
      int64_t offset = prompt != nullptr ? 0 : CountCharacters(echo_text);
      choice["logprobs"] =
          logprobs_ ? CompletionLogprobs(outputs[i].logprobs, prompt, &offset)
                    : Json(nullptr);
    }
    choice["finish_reason"] = OpenAiFinishReason(completion.finish_reason);
    choice["stop_reason"] = StopReason(completion);
    choices.push_back(std::move(choice));
  }
  response["choices"] = std::move(choices);
  response["usage"] =
      UsageJson(prompt_tokens, completion_tokens, cached_tokens);
  return response;
}

Json ResponseShaper::Chunk(int index, const ChoiceDelta& delta,
                           int64_t* text_offset,
                           const scheduler::Completion* finish, bool role,
                           bool include_usage) const {
  Json chunk = Envelope(true);
  Json choice = {{"index", index}};
  if (kind_ == ApiKind::kChat) {
    Json message = Json::object();
    if (role) message["role"] = "assistant";
    if (role || !delta.text.empty()) message["content"] = delta.text;
    choice["delta"] = std::move(message);
    choice["logprobs"] = logprobs_ && !delta.logprobs.empty()
                             ? ChatLogprobs(delta.logprobs)
                             : Json(nullptr);
  } else {
    choice["text"] = delta.text;
    choice["logprobs"] =
        logprobs_ && (!delta.logprobs.empty() || delta.prompt != nullptr)
            ? CompletionLogprobs(delta.logprobs, delta.prompt, text_offset)
            : Json(nullptr);
  }
  if (finish != nullptr) {
    choice["finish_reason"] = OpenAiFinishReason(finish->finish_reason);
    choice["stop_reason"] = StopReason(*finish);
  } else {
    choice["finish_reason"] = nullptr;
  }
  chunk["choices"] = Json::array({std::move(choice)});
  if (include_usage) chunk["usage"] = nullptr;
  return chunk;
}

Json ResponseShaper::UsageChunk(int prompt_tokens, int completion_tokens,
                                int cached_tokens) const {
  Json chunk = Envelope(true);
  chunk["choices"] = Json::array();
  chunk["usage"] = UsageJson(prompt_tokens, completion_tokens, cached_tokens);
  return chunk;
}

}  // namespace tvq::service::http
