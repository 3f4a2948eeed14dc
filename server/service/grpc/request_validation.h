// Checks every field of a request against the model and the server's limits,
// and turns the proto into the scheduler's request. Each failure is
// InvalidArgument naming the field, the value and the allowed range, e.g.
// "top_p must be in (0, 1], got 1.5".
#ifndef TVQ_SERVER_SERVICE_GRPC_REQUEST_VALIDATION_H_
#define TVQ_SERVER_SERVICE_GRPC_REQUEST_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/core/request_limits.h"
#include "server/model/model_config.h"
#include "server/scheduler/request.h"
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
absl::StatusOr<scheduler::GenerationRequest> ToGenerationRequest(
    const v1::GenerateRequest& request, const ValidationContext& context,
    uint64_t seed);

// Score.
absl::StatusOr<scheduler::ScoreRequest> ToScoreRequest(
    const v1::ScoreRequest& request, const ValidationContext& context);

// Tokenize: the text's ids (with the eos prefix unless no_eos_prefix).
absl::StatusOr<std::vector<int32_t>> TokenizeText(
    const v1::TokenizeRequest& request, const ValidationContext& context);

// Detokenize: checks the ids.
absl::Status ValidateDetokenizeRequest(const v1::DetokenizeRequest& request,
                                       const ValidationContext& context);

// A random seed for requests that set none.
uint64_t RandomSeed();

// An empty request_id is replaced by a generated one; a given one must be
// printable ASCII, at most `max_length` characters.
absl::StatusOr<std::string> ResolveRequestId(const std::string& request_id,
                                             int max_length);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_REQUEST_VALIDATION_H_
