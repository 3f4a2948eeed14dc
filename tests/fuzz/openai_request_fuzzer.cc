// libFuzzer target: the OpenAI-compatible HTTP request parsing
// (server/service/http/json_fields.h, completion_request.h). The first input
// byte picks the endpoint (/v1/completions, /v1/chat/completions,
// /v1/responses), the rest is the request body: parsed as strict JSON, then
// validated against the tiny-byte golden model's config, the byte tokenizer
// and a chat template, as the HTTP front end does. Every body must give a plan
// or a clean error; every generation a plan holds must satisfy
// request_checks.h.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/model/model_weights.h"
#include "server/service/http/chat_template.h"
#include "server/service/http/completion_request.h"
#include "server/service/http/json_fields.h"
#include "server/text/byte_tokenizer.h"
#include "tests/fuzz/request_checks.h"

namespace {

namespace http = tvq::service::http;

struct Model {
  tvq::runtime::ModelConfig config;
  tvq::runtime::ByteTokenizer tokenizer;
  http::ChatTemplate chat_template;
  http::RequestContext context;
};

const Model& TheModel() {
  static const Model* model = [] {
    auto config = tvq::runtime::ModelWeights::LoadConfig(
        std::string(TVQ_TEST_DATA_DIR) + "/golden/tiny-byte/model");
    if (!config.ok()) std::abort();
    auto chat_template = http::ParseChatTemplate(R"({
      "roles": {"system": {"prefix": "S: ", "suffix": "\n"},
                "user": {"prefix": "U: ", "suffix": "\n"},
                "assistant": {"prefix": "A: ", "suffix": "\n"}},
      "generation_prefix": "A:", "stop": ["\nU:"]})");
    if (!chat_template.ok()) std::abort();
    auto* loaded = new Model;
    loaded->config = *config;
    loaded->chat_template = *chat_template;
    loaded->context.config = &loaded->config;
    loaded->context.tokenizer = &loaded->tokenizer;
    loaded->context.served_model_name = "tiny";
    loaded->context.chat_template = &loaded->chat_template;
    loaded->context.default_seed = 7;
    return loaded;
  }();
  return *model;
}

void CheckPlan(const http::CompletionPlan& plan, const Model& model) {
  if (plan.choices.empty() ||
      plan.choices.size() > static_cast<size_t>(http::kMaxChoices)) {
    tvq::fuzz::Violated("choices outside [1, kMaxChoices]");
  }
  for (const auto& choice : plan.choices) {
    tvq::fuzz::CheckGenerationRequest(choice, model.config,
                                      model.context.limits);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Model& model = TheModel();
  const uint8_t endpoint = data[0] % 3;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1,
                              size - 1);
  auto json = http::ParseRequestBody(body);
  if (!json.ok()) return 0;
  switch (endpoint) {
    case 0: {
      auto plan = http::ParseCompletionRequest(*json, model.context);
      if (plan.ok()) CheckPlan(*plan, model);
      break;
    }
    case 1: {
      auto plan = http::ParseChatCompletionRequest(*json, model.context);
      if (plan.ok()) CheckPlan(*plan, model);
      break;
    }
    case 2: {
      auto plan = http::ParseResponsesRequest(*json, model.context);
      if (plan.ok()) {
        tvq::fuzz::CheckGenerationRequest(plan->request, model.config,
                                          model.context.limits);
      }
      break;
    }
  }
  return 0;
}
