#include "server/service/grpc/request_validation.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <string_view>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"
#include "server/text/utf8.h"

namespace tvq::service {
namespace {

absl::Status OutOfRange(std::string_view field, std::string_view range,
                        double value) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s must be in %s, got %g", field, range, value));
}

// NaN fails every check (the comparisons are written to be false for NaN).
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

absl::Status CheckTokenIds(std::string_view field,
                           const google::protobuf::RepeatedField<int32_t>& ids,
                           int n_vocab) {
  return runtime::CheckTokenIds(
      std::span<const int32_t>(ids.data(), static_cast<size_t>(ids.size())),
      n_vocab, field);
}

// The prompt of Generate or the sequence of Score, eos prefix applied.
// `has_text`/`has_ids` say which oneof member is set.
// `missing` is the message when neither is set; `optional`: an unset or
// empty prompt is an empty list (sessions).
absl::StatusOr<std::vector<int32_t>> PromptTokens(
    bool has_text, const std::string& text, bool has_ids,
    const google::protobuf::RepeatedField<int32_t>& ids, bool no_eos_prefix,
    const ValidationContext& context, std::string_view missing,
    bool optional = false) {
  const runtime::ModelConfig& config = *context.config;
  std::vector<int32_t> tokens;
  if (!no_eos_prefix) tokens.push_back(config.eos_id);
  if (optional && ((has_text && text.empty()) || (has_ids && ids.empty()) ||
                   (!has_text && !has_ids))) {
    return tokens;
  }
  if (has_text) {
    if (text.empty()) {
      return absl::InvalidArgumentError(
          "text must not be empty (set text or token_ids)");
    }
    // Bound the work before tokenizing: no tokenizer makes fewer tokens
    // than bytes / 64.
    if (text.size() / 64 >
        static_cast<size_t>(context.limits.max_prompt_tokens)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "text has %d bytes, far more than the prompt limit of %d tokens "
          "(--max-prompt-tokens)",
          text.size(), context.limits.max_prompt_tokens));
    }
    absl::StatusOr<std::vector<int32_t>> encoded =
        context.tokenizer->Encode(text);
    if (!encoded.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "text could not be tokenized: %s", encoded.status().message()));
    }
    tokens.insert(tokens.end(), encoded->begin(), encoded->end());
  } else if (has_ids) {
    if (ids.empty()) {
      return absl::InvalidArgumentError(
          "token_ids must not be empty (set text or token_ids)");
    }
    TVQ_RETURN_IF_ERROR(CheckTokenIds("token_ids", ids, config.n_vocab));
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  } else {
    return absl::InvalidArgumentError(std::string(missing));
  }
  if (tokens.size() > static_cast<size_t>(context.limits.max_prompt_tokens)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the prompt has %d tokens (eos prefix included), more than the limit "
        "of %d (--max-prompt-tokens)",
        tokens.size(), context.limits.max_prompt_tokens));
  }
  return tokens;
}

absl::Status CheckTopLogprobs(int top_logprobs, const RequestLimits& limits) {
  if (top_logprobs >= 0 && top_logprobs <= limits.max_top_logprobs) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("top_logprobs must be in [0, %d], got %d",
                      limits.max_top_logprobs, top_logprobs));
}

uint64_t RandomBits() {
  thread_local absl::BitGen generator;
  return absl::Uniform<uint64_t>(generator);
}

}  // namespace

uint64_t RandomSeed() { return RandomBits(); }

absl::StatusOr<std::string> ResolveRequestId(const std::string& request_id,
                                             int max_length) {
  if (request_id.empty()) {
    return absl::StrFormat("req-%016x", RandomBits());
  }
  if (static_cast<int>(request_id.size()) > max_length) {
    return absl::InvalidArgumentError(
        absl::StrFormat("request_id must have at most %d characters, got %d",
                        max_length, request_id.size()));
  }
  for (char c : request_id) {
    if (c < 0x20 || c > 0x7E) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "request_id must be printable ASCII, got a byte 0x%02x",
          static_cast<unsigned char>(c)));
    }
  }
  return request_id;
}

absl::StatusOr<scheduler::GenerationRequest> ToGenerationRequest(
    const v1::GenerateRequest& request, const ValidationContext& context,
    uint64_t seed) {
  const runtime::ModelConfig& config = *context.config;
  const RequestLimits& limits = context.limits;
  scheduler::GenerationRequest out;
  TVQ_ASSIGN_OR_RETURN(
      out.request_id,
      ResolveRequestId(request.request_id(), limits.max_request_id_length));

  // Sampling.
  runtime::SamplingParams& sampling = out.sampling;
  sampling.temperature =
      request.has_temperature() ? request.temperature() : 1.0f;
  TVQ_RETURN_IF_ERROR(
      CheckClosed("temperature", sampling.temperature, 0.0, 100.0));
  if (request.top_k() < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "top_k must be >= 0 (0 = no limit), got %d", request.top_k()));
  }
  sampling.top_k = request.top_k();
  sampling.top_p = request.has_top_p() ? request.top_p() : 1.0f;
  TVQ_RETURN_IF_ERROR(CheckLeftOpen("top_p", sampling.top_p, 0.0, 1.0));
  sampling.min_p = request.min_p();
  TVQ_RETURN_IF_ERROR(CheckClosed("min_p", sampling.min_p, 0.0, 1.0));
  sampling.repetition_penalty =
      request.has_repetition_penalty() ? request.repetition_penalty() : 1.0f;
  TVQ_RETURN_IF_ERROR(CheckLeftOpen("repetition_penalty",
                                    sampling.repetition_penalty, 0.0, 10.0));
  sampling.presence_penalty = request.presence_penalty();
  TVQ_RETURN_IF_ERROR(
      CheckClosed("presence_penalty", sampling.presence_penalty, -2.0, 2.0));
  sampling.frequency_penalty = request.frequency_penalty();
  TVQ_RETURN_IF_ERROR(
      CheckClosed("frequency_penalty", sampling.frequency_penalty, -2.0, 2.0));
  sampling.seed = request.has_seed() ? request.seed() : seed;

  // Stopping.
  if (request.has_max_new_tokens()) {
    if (request.max_new_tokens() < 1 ||
        request.max_new_tokens() > limits.max_new_tokens_limit) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "max_new_tokens must be in [1, %d] (--max-new-tokens-limit), got %d",
          limits.max_new_tokens_limit, request.max_new_tokens()));
    }
    out.max_new_tokens = request.max_new_tokens();
  } else {
    out.max_new_tokens =
        std::min(limits.default_max_new_tokens, limits.max_new_tokens_limit);
  }
  if (request.stop_size() > limits.max_stop_sequences) {
    return absl::InvalidArgumentError(
        absl::StrFormat("stop must have at most %d sequences, got %d",
                        limits.max_stop_sequences, request.stop_size()));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string& stop = request.stop(i);
    if (stop.empty()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("stop[%d] must not be empty", i));
    }
    if (static_cast<int>(stop.size()) > limits.max_stop_sequence_bytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("stop[%d] must have 1 to %d bytes, got %d", i,
                          limits.max_stop_sequence_bytes, stop.size()));
    }
    if (!runtime::IsValidUtf8(stop)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("stop[%d] must be valid UTF-8", i));
    }
    out.stop_sequences.push_back(stop);
  }
  if (request.stop_token_ids_size() > limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "stop_token_ids must have at most %d ids, got %d",
        limits.max_stop_token_ids, request.stop_token_ids_size()));
  }
  TVQ_RETURN_IF_ERROR(CheckTokenIds("stop_token_ids", request.stop_token_ids(),
                                    config.n_vocab));
  out.stop_token_ids.assign(request.stop_token_ids().begin(),
                            request.stop_token_ids().end());
  out.ignore_eos = request.ignore_eos();

  // Logprobs.
  TVQ_RETURN_IF_ERROR(CheckTopLogprobs(request.top_logprobs(), limits));
  out.top_logprobs = request.top_logprobs();
  out.logprobs = request.logprobs() || request.top_logprobs() > 0;

  // The prompt last: it is the expensive part (tokenization).
  const bool in_session = !request.session_id().empty();
  if (in_session) {
    TVQ_RETURN_IF_ERROR(ValidateSessionId(request.session_id(), "session_id"));
  }
  TVQ_ASSIGN_OR_RETURN(
      out.prompt,
      PromptTokens(request.prompt_case() == v1::GenerateRequest::kText,
                   request.text(),
                   request.prompt_case() == v1::GenerateRequest::kTokenIds,
                   request.token_ids().ids(),
                   request.no_eos_prefix() || in_session, context,
                   "a prompt is required: set text or token_ids",
                   /*optional=*/in_session));
  return out;
}

absl::StatusOr<scheduler::ScoreRequest> ToScoreRequest(
    const v1::ScoreRequest& request, const ValidationContext& context) {
  scheduler::ScoreRequest out;
  TVQ_ASSIGN_OR_RETURN(out.request_id,
                       ResolveRequestId(request.request_id(),
                                        context.limits.max_request_id_length));
  TVQ_RETURN_IF_ERROR(CheckTopLogprobs(request.top_logprobs(), context.limits));
  out.top_logprobs = request.top_logprobs();
  if (!request.session_id().empty()) {
    TVQ_RETURN_IF_ERROR(ValidateSessionId(request.session_id(), "session_id"));
    // In a session: the new tokens as given, at least one.
    TVQ_ASSIGN_OR_RETURN(
        out.tokens,
        PromptTokens(request.input_case() == v1::ScoreRequest::kText,
                     request.text(),
                     request.input_case() == v1::ScoreRequest::kTokenIds,
                     request.token_ids().ids(), /*no_eos_prefix=*/true,
                     context,
                     "text or token_ids is required: the tokens to score"));
    return out;
  }
  TVQ_ASSIGN_OR_RETURN(
      out.tokens,
      PromptTokens(request.input_case() == v1::ScoreRequest::kText,
                   request.text(),
                   request.input_case() == v1::ScoreRequest::kTokenIds,
                   request.token_ids().ids(), request.no_eos_prefix(), context,
                   "text or token_ids is required: the sequence to score"));
  if (out.tokens.size() < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the scored sequence must have at least 2 tokens (eos prefix "
        "included), got %d",
        out.tokens.size()));
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> TokenizeText(
    const v1::TokenizeRequest& request, const ValidationContext& context) {
  const int max_tokens = context.limits.max_prompt_tokens;
  std::vector<int32_t> tokens;
  if (!request.no_eos_prefix()) tokens.push_back(context.config->eos_id);
  if (request.text().empty()) return tokens;
  // The prompt limit, as for Generate and Score: bound the work before
  // tokenizing (no tokenizer makes fewer tokens than bytes / 64).
  if (request.text().size() / 64 > static_cast<size_t>(max_tokens)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text has %d bytes, far more than the prompt limit of %d tokens "
        "(--max-prompt-tokens)",
        request.text().size(), max_tokens));
  }
  absl::StatusOr<std::vector<int32_t>> encoded =
      context.tokenizer->Encode(request.text());
  if (!encoded.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text could not be tokenized: %s", encoded.status().message()));
  }
  tokens.insert(tokens.end(), encoded->begin(), encoded->end());
  if (tokens.size() > static_cast<size_t>(max_tokens)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text has %d tokens (eos prefix included), more than the prompt limit "
        "of %d (--max-prompt-tokens)",
        tokens.size(), max_tokens));
  }
  return tokens;
}

absl::Status ValidateDetokenizeRequest(const v1::DetokenizeRequest& request,
                                       const ValidationContext& context) {
  const int64_t max_ids = context.limits.max_detokenize_tokens();
  if (request.token_ids_size() > max_ids) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token_ids has %d ids, more than %d (--max-prompt-tokens + "
        "--max-new-tokens-limit)",
        request.token_ids_size(), max_ids));
  }
  return CheckTokenIds("token_ids", request.token_ids(),
                       context.config->n_vocab);
}

absl::Status ValidateSessionId(const std::string& session_id,
                               std::string_view field) {
  if (session_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is required", field));
  }
  return sessions::SessionStore::CheckId(session_id, field);
}

absl::StatusOr<sessions::SessionManager::CreateParams> ToCreateSessionParams(
    const v1::CreateSessionRequest& request, const ValidationContext& context) {
  sessions::SessionManager::CreateParams out;
  if (!request.session_id().empty()) {
    TVQ_RETURN_IF_ERROR(ValidateSessionId(request.session_id(), "session_id"));
  }
  out.session_id = request.session_id();
  if (request.ttl_seconds() < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ttl_seconds must be >= 0 (0 = the server's default), got %d",
        request.ttl_seconds()));
  }
  // The store checks the upper bound (--session-max-ttl); clamp first so
  // that the conversion cannot overflow.
  out.ttl = absl::Seconds(std::min<int64_t>(request.ttl_seconds(),
                                            int64_t{1} << 40));
  out.pinned = request.pinned();
  TVQ_ASSIGN_OR_RETURN(out.request_id,
                       ResolveRequestId(request.request_id(),
                                        context.limits.max_request_id_length));
  out.no_eos_prefix = request.no_eos_prefix();
  // The eos prefix is the session layer's (an empty prompt = an empty
  // session, with no prefix).
  TVQ_ASSIGN_OR_RETURN(
      out.prompt,
      PromptTokens(request.prompt_case() == v1::CreateSessionRequest::kText,
                   request.text(),
                   request.prompt_case() == v1::CreateSessionRequest::kTokenIds,
                   request.token_ids().ids(), /*no_eos_prefix=*/true, context,
                   "a prompt is required: set text or token_ids",
                   /*optional=*/true));
  return out;
}

absl::StatusOr<sessions::SessionManager::AppendParams> ToAppendParams(
    const v1::AppendToSessionRequest& request,
    const ValidationContext& context) {
  sessions::SessionManager::AppendParams out;
  TVQ_RETURN_IF_ERROR(ValidateSessionId(request.session_id(), "session_id"));
  out.session_id = request.session_id();
  TVQ_ASSIGN_OR_RETURN(out.request_id,
                       ResolveRequestId(request.request_id(),
                                        context.limits.max_request_id_length));
  out.no_eos_prefix = request.no_eos_prefix();
  TVQ_ASSIGN_OR_RETURN(
      out.tokens,
      PromptTokens(
          request.prompt_case() == v1::AppendToSessionRequest::kText,
          request.text(),
          request.prompt_case() == v1::AppendToSessionRequest::kTokenIds,
          request.token_ids().ids(), /*no_eos_prefix=*/true, context,
          "a prompt is required: set text or token_ids"));
  return out;
}

absl::Status ValidateForkSessionRequest(const v1::ForkSessionRequest& request) {
  TVQ_RETURN_IF_ERROR(ValidateSessionId(request.session_id(), "session_id"));
  if (!request.new_session_id().empty()) {
    TVQ_RETURN_IF_ERROR(
        ValidateSessionId(request.new_session_id(), "new_session_id"));
  }
  return absl::OkStatus();
}

}  // namespace tvq::service
