// libFuzzer target: the gRPC request validation
// (server/service/grpc/request_validation.h). The first input byte picks the
// request type, the rest is parsed as that protobuf message (as gRPC would;
// bytes that do not parse are refused before validation, as there) and
// validated against the tiny-byte golden model's config and the byte
// tokenizer. Validation must accept or refuse with INVALID_ARGUMENT (or
// another clean status); what it accepts must satisfy request_checks.h.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/model/model_weights.h"
#include "server/service/grpc/request_validation.h"
#include "server/text/byte_tokenizer.h"
#include "tests/fuzz/request_checks.h"

namespace {

using tvq::service::ValidationContext;

struct Model {
  tvq::runtime::ModelConfig config;
  tvq::runtime::ByteTokenizer tokenizer;
};

const Model& TheModel() {
  static const Model* model = [] {
    auto config = tvq::runtime::ModelWeights::LoadConfig(
        std::string(TVQ_TEST_DATA_DIR) + "/golden/tiny-byte/model");
    if (!config.ok()) std::abort();
    auto* loaded = new Model;
    loaded->config = *config;
    return loaded;
  }();
  return *model;
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message& message) {
  return message.ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Model& model = TheModel();
  ValidationContext context;
  context.config = &model.config;
  context.tokenizer = &model.tokenizer;
  const uint8_t kind = data[0] % 7;
  ++data;
  --size;
  switch (kind) {
    case 0: {
      tvq::v1::GenerateRequest request;
      if (!Parse(data, size, request)) return 0;
      auto validated = tvq::service::ToGenerationRequest(request, context, 1);
      if (validated.ok()) {
        tvq::fuzz::CheckGenerationRequest(*validated, model.config,
                                          context.limits);
      }
      break;
    }
    case 1: {
      tvq::v1::ScoreRequest request;
      if (!Parse(data, size, request)) return 0;
      auto validated = tvq::service::ToScoreRequest(request, context);
      if (validated.ok()) {
        tvq::fuzz::CheckIds(validated->tokens, model.config.n_vocab,
                            "score token outside the vocabulary");
        if (validated->top_logprobs < 0 ||
            validated->top_logprobs > context.limits.max_top_logprobs) {
          tvq::fuzz::Violated("score top_logprobs outside [0, limit]");
        }
      }
      break;
    }
    case 2: {
      tvq::v1::TokenizeRequest request;
      if (!Parse(data, size, request)) return 0;
      auto ids = tvq::service::TokenizeText(request, context);
      if (ids.ok()) {
        tvq::fuzz::CheckIds(*ids, model.config.n_vocab,
                            "tokenized id outside the vocabulary");
      }
      break;
    }
    case 3: {
      tvq::v1::DetokenizeRequest request;
      if (!Parse(data, size, request)) return 0;
      (void)tvq::service::ValidateDetokenizeRequest(request, context);
      break;
    }
    case 4: {
      tvq::v1::CreateSessionRequest request;
      if (!Parse(data, size, request)) return 0;
      auto params = tvq::service::ToCreateSessionParams(request, context);
      if (params.ok()) {
        tvq::fuzz::CheckIds(params->prompt, model.config.n_vocab,
                            "session prompt id outside the vocabulary");
      }
      break;
    }
    case 5: {
      tvq::v1::AppendToSessionRequest request;
      if (!Parse(data, size, request)) return 0;
      auto params = tvq::service::ToAppendParams(request, context);
      if (params.ok()) {
        tvq::fuzz::CheckIds(params->tokens, model.config.n_vocab,
                            "appended id outside the vocabulary");
        if (params->tokens.empty()) tvq::fuzz::Violated("empty append");
      }
      break;
    }
    case 6: {
      tvq::v1::ForkSessionRequest request;
      if (!Parse(data, size, request)) return 0;
      (void)tvq::service::ValidateForkSessionRequest(request);
      break;
    }
  }
  return 0;
}
