// The HTTP front end's pure parts, with the real byte tokenizer and the
// config of a golden model: request parsing and validation into scheduler
// requests (completion_request.h), chat templates (chat_template.h) and the
// one absl::Status -> HTTP mapping (http_errors.h). The transport and the
// endpoints are tested end to end against the real server (the *_test.py
// files here).
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/model/model_config.h"
#include "server/model/model_weights.h"
#include "server/service/http/chat_template.h"
#include "server/service/http/completion_request.h"
#include "server/service/http/http_errors.h"
#include "server/service/http/json_fields.h"
#include "server/text/byte_tokenizer.h"

namespace tvq::service::http {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class OpenAiRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<runtime::ModelConfig> config =
        runtime::ModelWeights::LoadConfig(std::string(TVQ_TEST_DATA_DIR) +
                                          "/golden/tiny-byte/model");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    context_.config = &config_;
    context_.tokenizer = &tokenizer_;
    context_.served_model_name = "tiny";
    context_.default_seed = 99;
    absl::StatusOr<ChatTemplate> parsed = ParseChatTemplate(R"({
      "roles": {"user": {"prefix": "U: ", "suffix": "\n"},
                "assistant": {"prefix": "A: ", "suffix": "\n"}},
      "generation_prefix": "A:", "stop": ["\nU:"]})");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    template_ = *parsed;
  }

  absl::StatusOr<CompletionPlan> Completion(const std::string& body) {
    absl::StatusOr<nlohmann::json> json = ParseRequestBody(body);
    if (!json.ok()) return json.status();
    return ParseCompletionRequest(*json, context_);
  }

  absl::StatusOr<CompletionPlan> Chat(const std::string& body) {
    absl::StatusOr<nlohmann::json> json = ParseRequestBody(body);
    if (!json.ok()) return json.status();
    return ParseChatCompletionRequest(*json, context_);
  }

  // The error `body` gets: its HTTP status, param and message.
  ApiError CompletionError(const std::string& body) {
    absl::StatusOr<CompletionPlan> plan = Completion(body);
    EXPECT_FALSE(plan.ok()) << body;
    return plan.ok() ? ApiError{} : ErrorFromStatus(plan.status());
  }

  runtime::ModelConfig config_;
  runtime::ByteTokenizer tokenizer_;
  RequestContext context_;
  ChatTemplate template_;
};

TEST_F(OpenAiRequestTest, DefaultsOfAMinimalCompletion) {
  absl::StatusOr<CompletionPlan> plan = Completion(R"({"prompt": "ab"})");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->choices.size(), 1u);
  const scheduler::GenerationRequest& request = plan->choices[0];
  // eos, then the bytes + 3.
  EXPECT_THAT(request.prompt, ElementsAre(1, 'a' + 3, 'b' + 3));
  EXPECT_EQ(request.max_new_tokens, context_.limits.default_max_new_tokens);
  EXPECT_EQ(request.sampling.temperature, 1.0f);
  EXPECT_EQ(request.sampling.top_p, 1.0f);
  EXPECT_EQ(request.sampling.top_k, 0);
  EXPECT_EQ(request.sampling.seed, 99u);
  EXPECT_FALSE(request.logprobs);
  EXPECT_FALSE(request.ignore_eos);
  EXPECT_FALSE(plan->stream);
  EXPECT_FALSE(plan->echo);
  EXPECT_TRUE(plan->generate);
}

TEST_F(OpenAiRequestTest, ChoicesGetConsecutiveSeedsAndIds) {
  absl::StatusOr<CompletionPlan> plan = Completion(
      R"({"prompt": [5, 6], "n": 3, "seed": 7, "top_k": -1, "stop": "x",
          "logprobs": 2, "model": "tiny"})");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->choices.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(plan->choices[i].sampling.seed, 7u + i);
    EXPECT_THAT(plan->choices[i].prompt, ElementsAre(5, 6));  // as given
    EXPECT_THAT(plan->choices[i].stop_sequences, ElementsAre("x"));
    EXPECT_EQ(plan->choices[i].top_logprobs, 2);
    EXPECT_TRUE(plan->choices[i].logprobs);
    EXPECT_EQ(plan->choices[i].sampling.top_k, 0);
  }
  EXPECT_NE(plan->choices[0].request_id, plan->choices[1].request_id);
}

TEST_F(OpenAiRequestTest, EchoWithZeroTokensScoresThePrompt) {
  absl::StatusOr<CompletionPlan> plan = Completion(
      R"({"prompt": "ab", "echo": true, "logprobs": 1, "max_tokens": 0})");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->score_prompt);
  EXPECT_FALSE(plan->generate);
  EXPECT_EQ(plan->echo_text, "ab");
  EXPECT_EQ(CompletionError(R"({"prompt": "ab", "max_tokens": 0})").param,
            "max_tokens");
}

TEST_F(OpenAiRequestTest, InvalidFieldsAreNamed) {
  struct Case {
    const char* body;
    const char* param;
    const char* message;
  };
  const Case cases[] = {
      {R"({"prompt": "a", "temperature": "x"})", "temperature",
       "temperature must be a number"},
      {R"({"prompt": "a", "top_p": 1.5})", "top_p", "top_p must be in (0, 1]"},
      {R"({"prompt": "a", "n": 65})", "n", "n must be in [1, 64]"},
      {R"({"prompt": [1, 300]})", "prompt",
       "prompt[1] must be a token id in [0, 259), got 300"},
      {R"({"prompt": "a", "stop": [1]})", "stop[0]", "must be a string"},
      {R"({"prompt": "a", "bogus": 1})", "bogus", "unknown field bogus"},
      {R"({"prompt": "a", "min_tokens": 2})", "min_tokens", "not supported"},
      {R"({})", "prompt", "prompt is required"},
  };
  for (const Case& test : cases) {
    const ApiError error = CompletionError(test.body);
    EXPECT_EQ(error.http_status, 400) << test.body;
    EXPECT_EQ(error.param, test.param) << test.body;
    EXPECT_THAT(error.message, HasSubstr(test.message)) << test.body;
  }
}

TEST_F(OpenAiRequestTest, AnotherModelIsModelNotFound) {
  const ApiError error = CompletionError(R"({"prompt": "a", "model": "x"})");
  EXPECT_EQ(error.http_status, 404);
  EXPECT_EQ(error.code, "model_not_found");
  EXPECT_EQ(error.param, "model");
}

TEST_F(OpenAiRequestTest, ChatNeedsATemplate) {
  absl::StatusOr<CompletionPlan> plan =
      Chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(plan.status().message(), HasSubstr("declares no chat template"));
  EXPECT_EQ(ErrorFromStatus(plan.status()).param, "messages");
}

TEST_F(OpenAiRequestTest, ChatPromptFromTheTemplate) {
  context_.chat_template = &template_;
  absl::StatusOr<CompletionPlan> plan = Chat(
      R"({"messages": [{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": [
                         {"type": "text", "text": "yo"}]}],
          "max_completion_tokens": 5, "stop": ["!"]})");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const scheduler::GenerationRequest& request = plan->choices[0];
  absl::StatusOr<std::vector<int32_t>> expected =
      tokenizer_.Encode("U: hi\nA: yo\nA:");
  ASSERT_TRUE(expected.ok());
  expected->insert(expected->begin(), config_.eos_id);
  EXPECT_EQ(request.prompt, *expected);
  EXPECT_EQ(request.max_new_tokens, 5);
  EXPECT_THAT(request.stop_sequences, ElementsAre("!", "\nU:"));

  absl::StatusOr<CompletionPlan> bad_role =
      Chat(R"({"messages": [{"role": "tool", "content": "x"}]})");
  ASSERT_FALSE(bad_role.ok());
  EXPECT_EQ(ErrorFromStatus(bad_role.status()).param, "messages[0].role");
  EXPECT_THAT(bad_role.status().message(), HasSubstr("known: assistant, user"));
}

TEST(ChatTemplateTest, MalformedTemplatesNameTheKey) {
  EXPECT_THAT(ParseChatTemplate("{").status().message(),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseChatTemplate(R"({"roles": {}})").status().message(),
              HasSubstr("\"roles\" must be a non-empty object"));
  EXPECT_THAT(ParseChatTemplate(R"({"roles": {"u": {"prefix": 2}}})")
                  .status()
                  .message(),
              HasSubstr("roles.u.prefix must be a string"));
  EXPECT_THAT(ParseChatTemplate(R"({"roles": {"u": {}}, "stop": [""]})")
                  .status()
                  .message(),
              HasSubstr("\"stop\" must hold non-empty strings"));
}

TEST(HttpErrorsTest, OneMappingFromStatusToHttp) {
  struct Case {
    absl::Status status;
    int http_status;
    const char* type;
  };
  const Case cases[] = {
      {absl::InvalidArgumentError("x"), 400, "invalid_request_error"},
      {absl::FailedPreconditionError("x"), 400, "invalid_request_error"},
      {absl::NotFoundError("x"), 404, "invalid_request_error"},
      {absl::ResourceExhaustedError("x"), 429, "rate_limit_error"},
      {absl::UnavailableError("x"), 503, "service_unavailable_error"},
      {absl::DeadlineExceededError("x"), 504, "timeout_error"},
      {absl::UnimplementedError("x"), 501, "invalid_request_error"},
      {absl::InternalError("x"), 500, "server_error"},
      {absl::UnknownError("x"), 500, "server_error"},
  };
  for (const Case& test : cases) {
    const ApiError error = ErrorFromStatus(test.status);
    EXPECT_EQ(error.http_status, test.http_status) << test.status;
    EXPECT_EQ(error.type, test.type) << test.status;
    EXPECT_EQ(error.message, "x");
    EXPECT_EQ(error.param, "");
  }
  const nlohmann::json body = nlohmann::json::parse(
      ErrorBody(ErrorFromStatus(InvalidField("a.b", "m"))));
  EXPECT_EQ(body["error"]["param"], "a.b");
  EXPECT_EQ(body["error"]["message"], "m");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], "invalid_request");
  EXPECT_TRUE(nlohmann::json::parse(ErrorBody(
      ErrorFromStatus(absl::InternalError("x"))))["error"]["param"]
                  .is_null());
}

}  // namespace
}  // namespace tvq::service::http
