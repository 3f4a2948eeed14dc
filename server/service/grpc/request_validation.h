// Checks every field of a request against the model and the server's limits,
// and turns the proto into the scheduler's request. Each failure is
// InvalidArgument naming the field, the value and the allowed range, e.g.
// "top_p must be in (0, 1], got 1.5".
#ifndef TVQ_SERVER_SERVICE_GRPC_REQUEST_VALIDATION_H_
#define TVQ_SERVER_SERVICE_GRPC_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/request_limits.h"
#include "server/model/model_config.h"
#include "server/scheduler/request.h"
#include "server/sessions/session_manager.h"
#include "server/text/tokenizer.h"
#include "tvq/v1/tvq.pb.h"

namespace tvq::service {

// The limits requests are checked against (core/request_limits.h: the
// tvq-server flags; reported by GetModelInfo as ServerLimits).
using RequestLimits = core::RequestLimits;

// What validation needs to know about the model.
struct ValidationContext {
  const runtime::ModelConfig* config = nullptr;
  const runtime::Tokenizer* tokenizer = nullptr;
  RequestLimits limits;
};

// Generate / GenerateStream. `seed` is used when the request has none.
// With session_id set, the prompt is the new tokens as given (no eos prefix:
// the session layer applies the rule) and may be empty.
absl::StatusOr<scheduler::GenerationRequest> ToGenerationRequest(
    const v1::GenerateRequest& request, const ValidationContext& context,
    uint64_t seed);

// Score. With session_id set, the input is the new tokens as given (at
// least 1).
absl::StatusOr<scheduler::ScoreRequest> ToScoreRequest(
    const v1::ScoreRequest& request, const ValidationContext& context);

// Tokenize: the text's ids (with the eos prefix unless no_eos_prefix).
absl::StatusOr<std::vector<int32_t>> TokenizeText(
    const v1::TokenizeRequest& request, const ValidationContext& context);

// Detokenize: checks the ids.
absl::Status ValidateDetokenizeRequest(const v1::DetokenizeRequest& request,
                                       const ValidationContext& context);

// Sessions. Every id field: 1 to 128 printable ASCII characters without
// spaces (sessions::SessionStore::CheckId), named in the error.
absl::Status ValidateSessionId(const std::string& session_id,
                               std::string_view field);
absl::StatusOr<sessions::SessionManager::CreateParams> ToCreateSessionParams(
    const v1::CreateSessionRequest& request, const ValidationContext& context);
absl::StatusOr<sessions::SessionManager::AppendParams> ToAppendParams(
    const v1::AppendToSessionRequest& request,
    const ValidationContext& context);
// ForkSession: the source id, and the new one when given.
absl::Status ValidateForkSessionRequest(const v1::ForkSessionRequest& request);

// A random seed for requests that set none.
uint64_t RandomSeed();

// An empty request_id is replaced by a generated one; a given one must be
// printable ASCII, at most `max_length` characters.
absl::StatusOr<std::string> ResolveRequestId(const std::string& request_id,
                                             int max_length);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_REQUEST_VALIDATION_H_
