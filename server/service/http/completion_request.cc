#include "server/service/http/completion_request.h"

#include <algorithm>
#include <optional>
#include <span>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"
#include "server/service/http/http_errors.h"
#include "server/service/http/json_fields.h"
#include "server/text/incremental_detokenizer.h"
#include "server/text/utf8.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;
namespace {

absl::Status OutOfRange(std::string_view field, std::string_view range,
                        double value) {
  return InvalidField(
      field, absl::StrFormat("%s must be in %s, got %g", field, range, value));
}

absl::Status CheckClosed(std::string_view field, double value, double low,
                         double high) {
  if (value >= low && value <= high) return absl::OkStatus();
  return OutOfRange(field, absl::StrFormat("[%g, %g]", low, high), value);
}

absl::Status CheckLeftOpen(std::string_view field, double value, double low,
                           double high) {
  if (value > low && value <= high) return absl::OkStatus();
  return OutOfRange(field, absl::StrFormat("(%g, %g]", low, high), value);
}

absl::Status Unsupported(std::string_view field, std::string_view why) {
  return InvalidField(field, StrCat(field,
                                    " is not supported by this "
                                    "server: ",
                                    why));
}

std::string RandomHex() {
  thread_local absl::BitGen generator;
  return absl::StrFormat("%016x%08x", absl::Uniform<uint64_t>(generator),
                         absl::Uniform<uint32_t>(generator));
}

// The text of `ids` as one whole sequence (valid UTF-8).
absl::StatusOr<std::string> DetokenizeAll(const runtime::Tokenizer& tokenizer,
                                          std::span<const int32_t> ids) {
  runtime::IncrementalDetokenizer detokenizer(tokenizer);
  std::string text;
  for (int32_t id : ids) {
    TVQ_ASSIGN_OR_RETURN(std::string piece, detokenizer.Append(id));
    text += piece;
  }
  text += detokenizer.Finish();
  return text;
}

// `stop`: a string or a list of strings, appended to `out`.
absl::Status ParseStop(const nlohmann::json* stop,
                       const core::RequestLimits& limits,
                       std::vector<std::string>& out) {
  if (stop == nullptr) return absl::OkStatus();
  std::vector<const nlohmann::json*> entries;
  if (stop->is_string()) {
    entries.push_back(stop);
  } else if (stop->is_array()) {
    for (const nlohmann::json& entry : *stop) entries.push_back(&entry);
  } else {
    return WrongType("stop", "a string or an array of strings", *stop);
  }
  if (static_cast<int>(entries.size()) > limits.max_stop_sequences) {
    return InvalidField(
        "stop", absl::StrFormat("stop must have at most %d sequences, got %d",
                                limits.max_stop_sequences, entries.size()));
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string name =
        stop->is_string() ? "stop" : absl::StrFormat("stop[%d]", i);
    if (!entries[i]->is_string()) {
      return WrongType(name, "a string", *entries[i]);
    }
    const std::string& text = entries[i]->get_ref<const std::string&>();
    if (text.empty() ||
        static_cast<int>(text.size()) > limits.max_stop_sequence_bytes) {
      return InvalidField(
          "stop", absl::StrFormat("%s must have 1 to %d bytes, got %d", name,
                                  limits.max_stop_sequence_bytes, text.size()));
    }
    if (!runtime::IsValidUtf8(text)) {
      return InvalidField("stop", StrCat(name, " must be valid UTF-8"));
    }
    out.push_back(text);
  }
  return absl::OkStatus();
}

// Adds the chat template's stop sequences to a request's own (once each),
// at most --max-stop-sequences together.
absl::Status AddTemplateStops(const RequestContext& context,
                              std::vector<std::string>& stops) {
  for (const std::string& stop : context.chat_template->stop) {
    if (std::find(stops.begin(), stops.end(), stop) == stops.end()) {
      stops.push_back(stop);
    }
  }
  if (static_cast<int>(stops.size()) > context.limits.max_stop_sequences) {
    return InvalidField(
        "stop", absl::StrFormat("stop and the chat template's stop sequences "
                                "together must be at most %d, got %d",
                                context.limits.max_stop_sequences,
                                stops.size()));
  }
  return absl::OkStatus();
}

// The fields both APIs share: sampling, stopping, n, stream, seed, user and
// the vLLM extras. `max_tokens` is read by the caller (its name differs).
struct CommonFields {
  scheduler::GenerationRequest base;
  int n = 1;
  bool stream = false;
  bool include_usage = false;
};

absl::Status ParseCommon(JsonFields& fields, const RequestContext& context,
                         CommonFields& out) {
  const core::RequestLimits& limits = context.limits;
  out.base.frontend = scheduler::Frontend::kHttp;
  TVQ_RETURN_IF_ERROR(CheckModel(fields.Raw("model"), context));
  runtime::SamplingParams& sampling = out.base.sampling;

  TVQ_ASSIGN_OR_RETURN(std::optional<double> temperature,
                       fields.Number("temperature"));
  sampling.temperature = static_cast<float>(temperature.value_or(1.0));
  TVQ_RETURN_IF_ERROR(
      CheckClosed("temperature", temperature.value_or(1.0), 0.0, 100.0));
  TVQ_ASSIGN_OR_RETURN(std::optional<double> top_p, fields.Number("top_p"));
  TVQ_RETURN_IF_ERROR(CheckLeftOpen("top_p", top_p.value_or(1.0), 0.0, 1.0));
  sampling.top_p = static_cast<float>(top_p.value_or(1.0));
  TVQ_ASSIGN_OR_RETURN(std::optional<int64_t> top_k,
                       fields.Int("top_k", -1, INT32_MAX));
  // vLLM: -1 (or 0) = no limit.
  sampling.top_k = static_cast<int>(std::max<int64_t>(top_k.value_or(0), 0));
  TVQ_ASSIGN_OR_RETURN(std::optional<double> min_p, fields.Number("min_p"));
  TVQ_RETURN_IF_ERROR(CheckClosed("min_p", min_p.value_or(0.0), 0.0, 1.0));
  sampling.min_p = static_cast<float>(min_p.value_or(0.0));
  TVQ_ASSIGN_OR_RETURN(std::optional<double> repetition_penalty,
                       fields.Number("repetition_penalty"));
  TVQ_RETURN_IF_ERROR(CheckLeftOpen(
      "repetition_penalty", repetition_penalty.value_or(1.0), 0.0, 10.0));
  sampling.repetition_penalty =
      static_cast<float>(repetition_penalty.value_or(1.0));
  TVQ_ASSIGN_OR_RETURN(std::optional<double> presence_penalty,
                       fields.Number("presence_penalty"));
  TVQ_RETURN_IF_ERROR(CheckClosed("presence_penalty",
                                  presence_penalty.value_or(0.0), -2.0, 2.0));
  sampling.presence_penalty = static_cast<float>(presence_penalty.value_or(0));
  TVQ_ASSIGN_OR_RETURN(std::optional<double> frequency_penalty,
                       fields.Number("frequency_penalty"));
  TVQ_RETURN_IF_ERROR(CheckClosed("frequency_penalty",
                                  frequency_penalty.value_or(0.0), -2.0, 2.0));
  sampling.frequency_penalty =
      static_cast<float>(frequency_penalty.value_or(0));
  TVQ_ASSIGN_OR_RETURN(std::optional<uint64_t> seed, fields.Uint64("seed"));
  sampling.seed = seed.value_or(context.default_seed);

  TVQ_ASSIGN_OR_RETURN(std::optional<int64_t> n,
                       fields.Int("n", 1, kMaxChoices));
  out.n = static_cast<int>(n.value_or(1));

  TVQ_RETURN_IF_ERROR(
      ParseStop(fields.Raw("stop"), limits, out.base.stop_sequences));
  if (const nlohmann::json* ids = fields.Raw("stop_token_ids")) {
    TVQ_ASSIGN_OR_RETURN(
        out.base.stop_token_ids,
        TokenIdArray(*ids, "stop_token_ids", context.config->n_vocab));
    if (static_cast<int>(out.base.stop_token_ids.size()) >
        limits.max_stop_token_ids) {
      return InvalidField(
          "stop_token_ids",
          absl::StrFormat("stop_token_ids must have at most %d ids, got %d",
                          limits.max_stop_token_ids,
                          out.base.stop_token_ids.size()));
    }
  }
  TVQ_ASSIGN_OR_RETURN(std::optional<bool> ignore_eos,
                       fields.Bool("ignore_eos"));
  out.base.ignore_eos = ignore_eos.value_or(false);
  TVQ_ASSIGN_OR_RETURN(std::optional<int64_t> min_tokens,
                       fields.Int("min_tokens", 0, INT32_MAX));
  if (min_tokens.value_or(0) > 0) {
    return Unsupported("min_tokens",
                       "the sampler has no minimum length (only 0 is "
                       "accepted)");
  }
  if (const nlohmann::json* bias = fields.Raw("logit_bias")) {
    if (!bias->is_object()) {
      return WrongType("logit_bias", "an object", *bias);
    }
    if (!bias->empty()) {
      return Unsupported("logit_bias", "the sampler applies no logit bias");
    }
  }

  TVQ_ASSIGN_OR_RETURN(std::optional<bool> stream, fields.Bool("stream"));
  out.stream = stream.value_or(false);
  if (const nlohmann::json* options = fields.Raw("stream_options")) {
    if (!options->is_object()) {
      return WrongType("stream_options", "an object", *options);
    }
    if (!out.stream) {
      return InvalidField("stream_options",
                          "stream_options is only allowed with stream: true");
    }
    JsonFields stream_fields(*options, "stream_options.");
    TVQ_ASSIGN_OR_RETURN(std::optional<bool> include_usage,
                         stream_fields.Bool("include_usage"));
    out.include_usage = include_usage.value_or(false);
    TVQ_RETURN_IF_ERROR(stream_fields.RejectUnknown());
  }
  // Identifiers for the caller's own bookkeeping: checked, not used.
  for (const char* key : {"user", "safety_identifier", "prompt_cache_key"}) {
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> value, fields.String(key));
    (void)value;
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ParseMaxTokens(JsonFields& fields, std::string_view primary,
                                   std::string_view alias,
                                   const core::RequestLimits& limits,
                                   int minimum = 1) {
  const int limit = limits.max_new_tokens_limit;
  TVQ_ASSIGN_OR_RETURN(std::optional<int64_t> value,
                       fields.Int(primary, INT32_MIN, INT32_MAX));
  std::string_view name = primary;
  if (!alias.empty()) {
    TVQ_ASSIGN_OR_RETURN(std::optional<int64_t> other,
                         fields.Int(alias, INT32_MIN, INT32_MAX));
    if (!value.has_value() && other.has_value()) {
      value = other;
      name = alias;
    }
  }
  if (!value.has_value()) {
    return std::min(limits.default_max_new_tokens, limit);
  }
  if (*value < minimum || *value > limit) {
    return InvalidField(
        name,
        absl::StrFormat("%s must be in [%d, %d] (--max-new-tokens-limit%s), "
                        "got %d",
                        name, minimum, limit,
                        minimum == 0 ? "; 0 only with echo" : "", *value));
  }
  return static_cast<int>(*value);
}

absl::Status CheckPromptLength(const std::vector<int32_t>& tokens,
                               std::string_view field,
                               const core::RequestLimits& limits) {
  if (tokens.size() > static_cast<size_t>(limits.max_prompt_tokens)) {
    return InvalidField(
        field, absl::StrFormat("the prompt has %d tokens (eos prefix "
                               "included), more than the limit of %d "
                               "(--max-prompt-tokens)",
                               tokens.size(), limits.max_prompt_tokens));
  }
  return absl::OkStatus();
}

// One request per choice: ids "<id>-<i>", seeds seed + i.
std::vector<scheduler::GenerationRequest> Choices(
    const scheduler::GenerationRequest& base, int n) {
  std::vector<scheduler::GenerationRequest> choices;
  choices.reserve(n);
  for (int i = 0; i < n; ++i) {
    scheduler::GenerationRequest choice = base;
    choice.request_id = StrCat(base.request_id, "-", i);
    choice.sampling.seed = base.sampling.seed + static_cast<uint64_t>(i);
    choices.push_back(std::move(choice));
  }
  return choices;
}

// A chat message's content: a string, or text parts [{"type": "text",
// "text": ...}].
absl::StatusOr<std::string> MessageContent(const nlohmann::json* content,
                                           const std::string& name) {
  if (content == nullptr) return std::string();
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return WrongType(name, "a string or an array of text parts", *content);
  }
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const nlohmann::json& part = (*content)[i];
    const std::string part_name = absl::StrFormat("%s[%d]", name, i);
    if (!part.is_object()) return WrongType(part_name, "an object", part);
    JsonFields fields(part, part_name + ".");
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> type,
                         fields.String("type"));
    if (type != "text") {
      return InvalidField(
          fields.Name("type"),
          StrCat(fields.Name("type"),
                 " must be \"text\": this model takes text only"));
    }
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> part_text,
                         fields.String("text"));
    if (!part_text.has_value()) {
      return InvalidField(fields.Name("text"),
                          StrCat(fields.Name("text"), " is required"));
    }
    TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
    text += *part_text;
  }
  return text;
}

}  // namespace

absl::Status CheckModel(const nlohmann::json* model,
                        const RequestContext& context) {
  if (model == nullptr) return absl::OkStatus();
  if (!model->is_string()) return WrongType("model", "a string", *model);
  if (model->get_ref<const std::string&>() != context.served_model_name) {
    return ModelNotFound(model->get_ref<const std::string&>());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> TokenizePrompt(
    const std::string& text, bool eos_prefix, std::string_view field,
    const RequestContext& context) {
  // Bound the work before tokenizing: no tokenizer makes fewer tokens than
  // bytes / 64.
  if (text.size() / 64 >
      static_cast<size_t>(context.limits.max_prompt_tokens)) {
    return InvalidField(
        field,
        absl::StrFormat("%s has %d bytes, far more than the prompt "
                        "limit of %d tokens (--max-prompt-tokens)",
                        field, text.size(), context.limits.max_prompt_tokens));
  }
  std::vector<int32_t> tokens;
  if (eos_prefix) tokens.push_back(context.config->eos_id);
  absl::StatusOr<std::vector<int32_t>> encoded =
      context.tokenizer->Encode(text);
  if (!encoded.ok()) {
    return InvalidField(
        field,
        StrCat(field, " could not be tokenized: ", encoded.status().message()));
  }
  tokens.insert(tokens.end(), encoded->begin(), encoded->end());
  return tokens;
}

absl::StatusOr<std::vector<int32_t>> TokenIdArray(const nlohmann::json& value,
                                                  std::string_view field,
                                                  int n_vocab) {
  if (!value.is_array()) {
    return WrongType(field, "an array of token ids", value);
  }
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    const nlohmann::json& entry = value[i];
    const bool in_range = entry.is_number_integer() &&
                          !(entry.is_number_unsigned() &&
                            entry.get<uint64_t>() > uint64_t{INT32_MAX}) &&
                          entry.get<int64_t>() >= 0 &&
                          entry.get<int64_t>() < n_vocab;
    if (!in_range) {
      return InvalidField(
          field,
          absl::StrFormat(
              "%s[%d] must be a token id in [0, %d), got %s", field, i, n_vocab,
              entry.dump(-1, ' ', false,
                         nlohmann::json::error_handler_t::replace)));
    }
    ids.push_back(static_cast<int32_t>(entry.get<int64_t>()));
  }
  return ids;
}

absl::StatusOr<CompletionPlan> ParseCompletionRequest(
    const nlohmann::json& body, const RequestContext& context) {
  JsonFields fields(body, "");
  CommonFields common;
  TVQ_RETURN_IF_ERROR(ParseCommon(fields, context, common));
  CompletionPlan plan;
  plan.kind = ApiKind::kCompletion;
  plan.stream = common.stream;
  plan.include_usage = common.include_usage;
  scheduler::GenerationRequest& base = common.base;
  base.request_id = StrCat("cmpl-", RandomHex());
  TVQ_ASSIGN_OR_RETURN(std::optional<bool> echo, fields.Bool("echo"));
  plan.echo = echo.value_or(false);
  // With echo, max_tokens may be 0: the prompt alone (scoring).
  TVQ_ASSIGN_OR_RETURN(base.max_new_tokens,
                       ParseMaxTokens(fields, "max_tokens", "", context.limits,
                                      plan.echo ? 0 : 1));
  plan.generate = base.max_new_tokens > 0;

  TVQ_ASSIGN_OR_RETURN(
      std::optional<int64_t> logprobs,
      fields.Int("logprobs", 0, context.limits.max_top_logprobs));
  plan.logprobs = logprobs.has_value();
  plan.top_logprobs = static_cast<int>(logprobs.value_or(0));
  base.logprobs = plan.logprobs;
  base.top_logprobs = plan.top_logprobs;
  plan.score_prompt = plan.echo && plan.logprobs;
  TVQ_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                       fields.String("suffix"));
  if (suffix.has_value() && !suffix->empty()) {
    return Unsupported("suffix",
                       "insertion (fill in the middle) needs a "
                       "model trained for it");
  }
  TVQ_ASSIGN_OR_RETURN(std::optional<int64_t> best_of,
                       fields.Int("best_of", 1, kMaxChoices));
  if (best_of.has_value() && *best_of != common.n) {
    return Unsupported("best_of",
                       "only best_of = n (or no best_of) is "
                       "accepted: choices are not ranked");
  }

  // The prompt last: tokenizing is the expensive part.
  const nlohmann::json* prompt = fields.Raw("prompt");
  if (prompt == nullptr) {
    return InvalidField("prompt",
                        "prompt is required (a string or an array "
                        "of token ids)");
  }
  // A list holding a single prompt is that prompt.
  if (prompt->is_array() && prompt->size() == 1 &&
      ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
    prompt = &(*prompt)[0];
  }
  if (prompt->is_string()) {
    const std::string& text = prompt->get_ref<const std::string&>();
    TVQ_ASSIGN_OR_RETURN(base.prompt,
                         TokenizePrompt(text, true, "prompt", context));
    if (plan.echo) plan.echo_text = text;
  } else if (prompt->is_array()) {
    if (prompt->empty()) {
      return InvalidField("prompt", "prompt must not be an empty array");
    }
    if ((*prompt)[0].is_string() || (*prompt)[0].is_array()) {
      return Unsupported("prompt",
                         "a batch of several prompts in one request; send "
                         "one request per prompt");
    }
    TVQ_ASSIGN_OR_RETURN(
        base.prompt, TokenIdArray(*prompt, "prompt", context.config->n_vocab));
    if (plan.echo) {
      absl::StatusOr<std::string> text =
          DetokenizeAll(*context.tokenizer, base.prompt);
      if (!text.ok())
        return InvalidField("prompt", std::string(text.status().message()));
      plan.echo_text = *std::move(text);
    }
  } else {
    return WrongType("prompt", "a string or an array of token ids", *prompt);
  }
  TVQ_RETURN_IF_ERROR(CheckPromptLength(base.prompt, "prompt", context.limits));
  TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
  plan.choices = Choices(base, common.n);
  return plan;
}

absl::StatusOr<CompletionPlan> ParseChatCompletionRequest(
    const nlohmann::json& body, const RequestContext& context) {
  JsonFields fields(body, "");
  CommonFields common;
  TVQ_RETURN_IF_ERROR(ParseCommon(fields, context, common));
  CompletionPlan plan;
  plan.kind = ApiKind::kChat;
  plan.stream = common.stream;
  plan.include_usage = common.include_usage;
  scheduler::GenerationRequest& base = common.base;
  base.request_id = StrCat("chatcmpl-", RandomHex());
  TVQ_ASSIGN_OR_RETURN(base.max_new_tokens,
                       ParseMaxTokens(fields, "max_completion_tokens",
                                      "max_tokens", context.limits));

  TVQ_ASSIGN_OR_RETURN(std::optional<bool> logprobs, fields.Bool("logprobs"));
  TVQ_ASSIGN_OR_RETURN(
      std::optional<int64_t> top_logprobs,
      fields.Int("top_logprobs", 0, context.limits.max_top_logprobs));
  if (top_logprobs.has_value() && !logprobs.value_or(false)) {
    return InvalidField("top_logprobs", "top_logprobs needs logprobs: true");
  }
  plan.logprobs = logprobs.value_or(false);
  plan.top_logprobs = static_cast<int>(top_logprobs.value_or(0));
  base.logprobs = plan.logprobs;
  base.top_logprobs = plan.top_logprobs;
  if (const nlohmann::json* format = fields.Raw("response_format")) {
    const bool text_only = format->is_object() && format->size() == 1 &&
                           format->contains("type") &&
                           (*format)["type"] == "text";
    if (!text_only) {
      return Unsupported("response_format",
                         "only {\"type\": \"text\"}: no constrained decoding");
    }
  }
  for (const char* key : {"tools", "tool_choice", "functions", "function_call",
                          "parallel_tool_calls"}) {
    if (fields.Raw(key) != nullptr) {
      return Unsupported(key, "this model has no tool calling");
    }
  }

  const nlohmann::json* messages = fields.Raw("messages");
  if (messages == nullptr || !messages->is_array() || messages->empty()) {
    return InvalidField("messages",
                        "messages must be a non-empty array of "
                        "{\"role\", \"content\"} objects");
  }
  if (context.chat_template == nullptr) {
    return InvalidField(
        "messages",
        StrCat("this model (", context.served_model_name,
               ") declares no chat template (", kChatTemplateFile,
               " in its model directory): it is a base language model; "
               "use /v1/completions with a prompt"));
  }
  std::vector<ChatMessage> parsed;
  for (size_t i = 0; i < messages->size(); ++i) {
    const nlohmann::json& message = (*messages)[i];
    const std::string name = absl::StrFormat("messages[%d]", i);
    if (!message.is_object()) return WrongType(name, "an object", message);
    JsonFields message_fields(message, name + ".");
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> role,
                         message_fields.String("role"));
    if (!role.has_value()) {
      return InvalidField(message_fields.Name("role"),
                          StrCat(message_fields.Name("role"), " is required"));
    }
    TVQ_ASSIGN_OR_RETURN(std::string content,
                         MessageContent(message_fields.Raw("content"),
                                        message_fields.Name("content")));
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> speaker,
                         message_fields.String("name"));
    (void)speaker;
    TVQ_RETURN_IF_ERROR(message_fields.RejectUnknown());
    parsed.push_back({*std::move(role), std::move(content)});
  }
  TVQ_RETURN_IF_ERROR(AddTemplateStops(context, base.stop_sequences));
  TVQ_ASSIGN_OR_RETURN(std::string prompt,
                       RenderChat(*context.chat_template, parsed));
  TVQ_ASSIGN_OR_RETURN(base.prompt,
                       TokenizePrompt(prompt, true, "messages", context));
  TVQ_RETURN_IF_ERROR(
      CheckPromptLength(base.prompt, "messages", context.limits));
  TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
  plan.choices = Choices(base, common.n);
  return plan;
}

namespace {

// One content part's text (input_text, output_text or text), or a string.
absl::Status AppendContentText(const nlohmann::json& content,
                               const std::string& name, std::string& out) {
  if (content.is_string()) {
    out += content.get_ref<const std::string&>();
    return absl::OkStatus();
  }
  if (!content.is_array()) {
    return WrongType(name, "a string or an array of content parts", content);
  }
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string part_name = StrCat(name, "[", i, "]");
    const nlohmann::json& part = content[i];
    if (!part.is_object()) return WrongType(part_name, "an object", part);
    JsonFields fields(part, part_name + ".");
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> type,
                         fields.String("type"));
    if (type.has_value() && *type != "input_text" && *type != "output_text" &&
        *type != "text") {
      return Unsupported(fields.Name("type"),
                         StrCat("only text parts (input_text, output_text) "
                                "are accepted, got \"",
                                *type, "\""));
    }
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> text,
                         fields.String("text"));
    if (!text.has_value()) {
      return InvalidField(fields.Name("text"),
                          StrCat(fields.Name("text"), " is required"));
    }
    // Output parts may carry annotations and logprobs: not used.
    (void)fields.Raw("annotations");
    (void)fields.Raw("logprobs");
    TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
    out += *text;
  }
  return absl::OkStatus();
}

// `input` as message items {type?: "message", role, content}, each with its
// text; a string is one message with an empty role.
absl::StatusOr<std::vector<ChatMessage>> ResponsesInputMessages(
    const nlohmann::json& input) {
  if (input.is_string()) {
    return std::vector<ChatMessage>{{"", input.get<std::string>()}};
  }
  if (!input.is_array()) {
    return WrongType("input", "a string or an array of message items", input);
  }
  if (input.empty()) {
    return InvalidField("input", "input must not be an empty array");
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < input.size(); ++i) {
    const std::string name = StrCat("input[", i, "]");
    const nlohmann::json& item = input[i];
    if (!item.is_object()) return WrongType(name, "an object", item);
    JsonFields fields(item, name + ".");
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> type,
                         fields.String("type"));
    if (type.has_value() && *type != "message") {
      return Unsupported(fields.Name("type"),
                         StrCat("only message items are accepted, got \"",
                                *type, "\""));
    }
    TVQ_ASSIGN_OR_RETURN(std::optional<std::string> role,
                         fields.String("role"));
    if (!role.has_value()) {
      return InvalidField(fields.Name("role"),
                          StrCat(fields.Name("role"), " is required"));
    }
    if (*role != "user" && *role != "assistant" && *role != "system" &&
        *role != "developer") {
      return InvalidField(
          fields.Name("role"),
          StrCat(fields.Name("role"),
                 " must be user, assistant, system or developer, got \"",
                 *role, "\""));
    }
    const nlohmann::json* content = fields.Raw("content");
    if (content == nullptr) {
      return InvalidField(fields.Name("content"),
                          StrCat(fields.Name("content"), " is required"));
    }
    std::string text;
    TVQ_RETURN_IF_ERROR(
        AppendContentText(*content, fields.Name("content"), text));
    (void)fields.Raw("id");
    (void)fields.Raw("status");
    TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
    messages.push_back({*std::move(role), std::move(text)});
  }
  return messages;
}

// The text of one turn (docs/http.md, "The prompt of a turn"). Plain: the
// instructions, then the texts in order. Message items with a chat template:
// the instructions as a system message, then the items (developer as system
// when the template has no developer role) rendered by the template, which
// ends with its generation prefix; a follow-up starts with the assistant
// role's suffix, which closes the previous output.
absl::StatusOr<std::string> ResponsesTurnText(
    const std::vector<ChatMessage>& input,
    const std::optional<std::string>& instructions, bool follow_up,
    const ChatTemplate* chat_template) {
  const bool plain = chat_template == nullptr || input.front().role.empty();
  if (plain) {
    std::string text = instructions.value_or("");
    for (const ChatMessage& message : input) text += message.content;
    return text;
  }
  std::vector<ChatMessage> messages;
  if (instructions.has_value()) messages.push_back({"system", *instructions});
  for (size_t i = 0; i < input.size(); ++i) {
    std::string role = input[i].role;
    if (role == "developer" && !chat_template->roles.contains(role)) {
      role = "system";
    }
    if (!chat_template->roles.contains(role)) {
      std::vector<std::string> known;
      for (const auto& entry : chat_template->roles) {
        known.push_back(entry.first);
      }
      const std::string field = StrCat("input[", i, "].role");
      return InvalidField(field,
                          StrCat(field, " \"", input[i].role,
                                 "\" is not a role of this model's chat "
                                 "template (known: ",
                                 absl::StrJoin(known, ", "), ")"));
    }
    messages.push_back({std::move(role), input[i].content});
  }
  if (instructions.has_value() && !chat_template->roles.contains("system")) {
    return InvalidField("instructions",
                        "this model's chat template has no system role for "
                        "the instructions");
  }
  TVQ_ASSIGN_OR_RETURN(std::string text, RenderChat(*chat_template, messages));
  if (follow_up) {
    if (const auto assistant = chat_template->roles.find("assistant");
        assistant != chat_template->roles.end()) {
      text = assistant->second.suffix + text;
    }
  }
  return text;
}

}  // namespace

absl::StatusOr<ResponsesPlan> ParseResponsesRequest(
    const nlohmann::json& body, const RequestContext& context) {
  JsonFields fields(body, "");
  CommonFields common;
  TVQ_RETURN_IF_ERROR(ParseCommon(fields, context, common));
  if (common.n != 1) {
    return Unsupported("n", "/v1/responses makes one output (n = 1)");
  }
  ResponsesPlan plan;
  plan.stream = common.stream;
  plan.request = std::move(common.base);
  plan.request.request_id = StrCat("resp_", RandomHex());
  // Echoed back as given (ParseCommon checked them).
  plan.temperature = plan.request.sampling.temperature;
  plan.top_p = plan.request.sampling.top_p;
  if (const auto it = body.find("temperature");
      it != body.end() && it->is_number()) {
    plan.temperature = it->get<double>();
  }
  if (const auto it = body.find("top_p"); it != body.end() && it->is_number()) {
    plan.top_p = it->get<double>();
  }
  TVQ_ASSIGN_OR_RETURN(plan.request.max_new_tokens,
                       ParseMaxTokens(fields, "max_output_tokens", "",
                                      context.limits));
  if (const auto it = body.find("max_output_tokens");
      it != body.end() && !it->is_null()) {
    plan.max_output_tokens = plan.request.max_new_tokens;
  }
  TVQ_ASSIGN_OR_RETURN(std::optional<bool> store, fields.Bool("store"));
  plan.store = store.value_or(true);
  TVQ_ASSIGN_OR_RETURN(std::optional<std::string> previous,
                       fields.String("previous_response_id"));
  plan.previous_response_id = previous.value_or("");
  TVQ_ASSIGN_OR_RETURN(plan.instructions, fields.String("instructions"));
  // Accepted as OpenAI's defaults only.
  TVQ_ASSIGN_OR_RETURN(std::optional<bool> parallel_tool_calls,
                       fields.Bool("parallel_tool_calls"));
  (void)parallel_tool_calls;
  if (const nlohmann::json* tools = fields.Raw("tools")) {
    if (!tools->is_array() || !tools->empty()) {
      return Unsupported("tools", "tool calling is not supported");
    }
  }
  // Fields other clients send with OpenAI's defaults: those defaults only.
  if (const nlohmann::json* choice = fields.Raw("tool_choice")) {
    if (!choice->is_string() || (*choice != "auto" && *choice != "none")) {
      return Unsupported("tool_choice",
                         "tool calling is not supported (only \"auto\" or "
                         "\"none\" without tools)");
    }
  }
  if (const nlohmann::json* truncation = fields.Raw("truncation")) {
    if (!truncation->is_string() || *truncation != "disabled") {
      return Unsupported("truncation",
                         "only \"disabled\" (a context over the limit is an "
                         "error)");
    }
  }
  if (const nlohmann::json* text = fields.Raw("text")) {
    if (!text->is_object()) return WrongType("text", "an object", *text);
    for (const auto& [key, value] : text->items()) {
      const bool plain = key == "format" && value.is_object() &&
                         value.size() == 1 && value.contains("type") &&
                         value["type"] == "text";
      if (!plain && !value.is_null()) {
        return Unsupported(StrCat("text.", key),
                           "only plain text output (text.format.type "
                           "\"text\")");
      }
    }
  }
  if (const nlohmann::json* reasoning = fields.Raw("reasoning")) {
    if (!reasoning->is_object() || !reasoning->empty()) {
      return Unsupported("reasoning", "the model does not reason");
    }
  }
  if (const nlohmann::json* include = fields.Raw("include")) {
    if (!include->is_array() || !include->empty()) {
      return Unsupported("include", "no extra output items to include");
    }
  }
  TVQ_ASSIGN_OR_RETURN(std::optional<bool> background,
                       fields.Bool("background"));
  if (background.value_or(false)) {
    return Unsupported("background", "responses run in the foreground");
  }
  if (const nlohmann::json* metadata = fields.Raw("metadata")) {
    if (!metadata->is_object()) {
      return WrongType("metadata", "an object", *metadata);
    }
    plan.metadata = *metadata;
  }
  const nlohmann::json* input = fields.Raw("input");
  if (input == nullptr) {
    return InvalidField("input",
                        "input is required (a string or an array of "
                        "message items)");
  }
  TVQ_ASSIGN_OR_RETURN(std::vector<ChatMessage> messages,
                       ResponsesInputMessages(*input));
  plan.chat_template_applied = context.chat_template != nullptr &&
                               !messages.front().role.empty();
  TVQ_ASSIGN_OR_RETURN(
      std::string text,
      ResponsesTurnText(messages, plan.instructions,
                        !plan.previous_response_id.empty(),
                        context.chat_template));
  if (plan.chat_template_applied) {
    TVQ_RETURN_IF_ERROR(
        AddTemplateStops(context, plan.request.stop_sequences));
  }
  if (text.empty()) {
    return InvalidField("input", "input must have some text");
  }
  // No eos prefix: the session adds it to the first tokens of a
  // conversation (session_manager.h).
  TVQ_ASSIGN_OR_RETURN(plan.request.prompt,
                       TokenizePrompt(text, false, "input", context));
  if (plan.request.prompt.empty()) {
    return InvalidField("input", "input must have some text");
  }
  TVQ_RETURN_IF_ERROR(fields.RejectUnknown());
  return plan;
}

}  // namespace tvq::service::http
