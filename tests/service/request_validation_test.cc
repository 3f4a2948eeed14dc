// Request validation (server/service/grpc/request_validation.h): every
// validated field of Generate, Score, Tokenize and Detokenize, with the real
// byte tokenizer and the config of a golden model. Each failure must be
// InvalidArgument naming the field; valid requests must come out with the
// documented defaults.
#include "server/service/grpc/request_validation.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model/model_config.h"
#include "server/model/model_weights.h"
#include "server/text/byte_tokenizer.h"

namespace tvq::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint64_t kSeed = 1234;

class RequestValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<runtime::ModelConfig> config =
        runtime::ModelWeights::LoadConfig(std::string(TVQ_TEST_DATA_DIR) +
                                          "/golden/tiny-byte/model");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    ASSERT_EQ(config_.n_vocab, 259);
    ASSERT_EQ(config_.eos_id, 1);
  }

  ValidationContext Context() const {
    ValidationContext context;
    context.config = &config_;
    context.tokenizer = &tokenizer_;
    context.limits = limits_;
    return context;
  }

  // A valid Generate request: token_ids {5, 6}.
  static v1::GenerateRequest ValidGenerate() {
    v1::GenerateRequest request;
    request.mutable_token_ids()->add_ids(5);
    request.mutable_token_ids()->add_ids(6);
    return request;
  }

  static v1::ScoreRequest ValidScore() {
    v1::ScoreRequest request;
    request.mutable_token_ids()->add_ids(5);
    request.mutable_token_ids()->add_ids(6);
    return request;
  }

  // Expects InvalidArgument with every substring in its message.
  static void ExpectInvalid(const absl::Status& status,
                            const std::vector<std::string>& substrings) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    for (const std::string& substring : substrings) {
      EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
    }
  }

  runtime::ModelConfig config_;
  runtime::ByteTokenizer tokenizer_;
  RequestLimits limits_;
};

// ------------------------------------------------------------ Generate

TEST_F(RequestValidationTest, ValidGenerateGetsTheDocumentedDefaults) {
  absl::StatusOr<scheduler::GenerationRequest> out =
      ToGenerationRequest(ValidGenerate(), Context(), kSeed);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->prompt, ElementsAre(1, 5, 6));  // eos prefix
  EXPECT_THAT(out->request_id, StartsWith("req-"));
  EXPECT_EQ(out->request_id.size(), 4u + 16u);
  EXPECT_EQ(out->sampling.temperature, 1.0f);
  EXPECT_EQ(out->sampling.top_k, 0);
  EXPECT_EQ(out->sampling.top_p, 1.0f);
  EXPECT_EQ(out->sampling.min_p, 0.0f);
  EXPECT_EQ(out->sampling.repetition_penalty, 1.0f);
  EXPECT_EQ(out->sampling.presence_penalty, 0.0f);
  EXPECT_EQ(out->sampling.frequency_penalty, 0.0f);
  EXPECT_EQ(out->sampling.seed, kSeed);
  EXPECT_EQ(out->max_new_tokens, limits_.default_max_new_tokens);
  EXPECT_TRUE(out->stop_sequences.empty());
  EXPECT_TRUE(out->stop_token_ids.empty());
  EXPECT_FALSE(out->ignore_eos);
  EXPECT_FALSE(out->logprobs);
  EXPECT_EQ(out->top_logprobs, 0);
}

TEST_F(RequestValidationTest, GenerateFieldsAreCopied) {
  v1::GenerateRequest request;
  request.set_text("hi");
  request.set_no_eos_prefix(true);
  request.set_request_id("my-id");
  request.set_temperature(0.0f);
  request.set_top_k(7);
  request.set_top_p(0.5f);
  request.set_min_p(0.25f);
  request.set_repetition_penalty(1.5f);
  request.set_presence_penalty(-2.0f);
  request.set_frequency_penalty(2.0f);
  request.set_seed(99);
  request.set_max_new_tokens(limits_.max_new_tokens_limit);
  request.add_stop("\n");
  request.add_stop_token_ids(258);
  request.set_ignore_eos(true);
  request.set_top_logprobs(limits_.max_top_logprobs);
  absl::StatusOr<scheduler::GenerationRequest> out =
      ToGenerationRequest(request, Context(), kSeed);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->prompt, ElementsAre('h' + 3, 'i' + 3));
  EXPECT_EQ(out->request_id, "my-id");
  EXPECT_EQ(out->sampling.temperature, 0.0f);
  EXPECT_EQ(out->sampling.top_k, 7);
  EXPECT_EQ(out->sampling.top_p, 0.5f);
  EXPECT_EQ(out->sampling.min_p, 0.25f);
  EXPECT_EQ(out->sampling.repetition_penalty, 1.5f);
  EXPECT_EQ(out->sampling.presence_penalty, -2.0f);
  EXPECT_EQ(out->sampling.frequency_penalty, 2.0f);
  EXPECT_EQ(out->sampling.seed, 99u);
  EXPECT_EQ(out->max_new_tokens, limits_.max_new_tokens_limit);
  EXPECT_THAT(out->stop_sequences, ElementsAre("\n"));
  EXPECT_THAT(out->stop_token_ids, ElementsAre(258));
  EXPECT_TRUE(out->ignore_eos);
  // top_logprobs > 0 implies logprobs.
  EXPECT_TRUE(out->logprobs);
  EXPECT_EQ(out->top_logprobs, limits_.max_top_logprobs);
}

TEST_F(RequestValidationTest, LogprobsWithoutTopLogprobs) {
  v1::GenerateRequest request = ValidGenerate();
  request.set_logprobs(true);
  absl::StatusOr<scheduler::GenerationRequest> out =
      ToGenerationRequest(request, Context(), kSeed);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->logprobs);
  EXPECT_EQ(out->top_logprobs, 0);
}

TEST_F(RequestValidationTest, DefaultMaxNewTokensIsCappedByTheLimit) {
  limits_.default_max_new_tokens = 500;
  limits_.max_new_tokens_limit = 100;
  absl::StatusOr<scheduler::GenerationRequest> out =
      ToGenerationRequest(ValidGenerate(), Context(), kSeed);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->max_new_tokens, 100);
}

TEST_F(RequestValidationTest, BoundaryValuesAreAccepted) {
  v1::GenerateRequest request = ValidGenerate();
  request.set_temperature(100.0f);
  request.set_top_p(1.0f);
  request.set_min_p(1.0f);
  request.set_repetition_penalty(10.0f);
  request.set_presence_penalty(2.0f);
  request.set_frequency_penalty(-2.0f);
  request.set_max_new_tokens(1);
  request.add_stop(std::string(limits_.max_stop_sequence_bytes, 'x'));
  request.add_stop_token_ids(0);
  request.set_request_id(std::string(limits_.max_request_id_length, 'a'));
  EXPECT_TRUE(ToGenerationRequest(request, Context(), kSeed).ok());
}

struct InvalidGenerateCase {
  std::string name;
  // Substrings the message must contain (the field first).
  std::vector<std::string> message;
  std::function<void(v1::GenerateRequest&)> mutate;
};

TEST_F(RequestValidationTest, EveryInvalidGenerateFieldIsNamed) {
  const std::vector<InvalidGenerateCase> cases = {
      {"no prompt",
       {"a prompt is required"},
       [](v1::GenerateRequest& r) { r.clear_prompt(); }},
      {"empty text",
       {"text must not be empty"},
       [](v1::GenerateRequest& r) { r.set_text(""); }},
      {"empty token_ids",
       {"token_ids must not be empty"},
       [](v1::GenerateRequest& r) { r.mutable_token_ids()->clear_ids(); }},
      {"token id = n_vocab",
       {"token_ids[2] must be a token id in [0, 259), got 259"},
       [](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(259); }},
      {"negative token id",
       {"token_ids[0]", "got -1"},
       [](v1::GenerateRequest& r) { r.mutable_token_ids()->set_ids(0, -1); }},
      {"temperature < 0",
       {"temperature must be in [0, 100], got -0.5"},
       [](v1::GenerateRequest& r) { r.set_temperature(-0.5f); }},
      {"temperature > 100",
       {"temperature"},
       [](v1::GenerateRequest& r) { r.set_temperature(100.5f); }},
      {"temperature NaN",
       {"temperature"},
       [](v1::GenerateRequest& r) { r.set_temperature(NAN); }},
      {"top_k < 0",
       {"top_k must be >= 0", "got -1"},
       [](v1::GenerateRequest& r) { r.set_top_k(-1); }},
      {"top_p = 0",
       {"top_p must be in (0, 1], got 0"},
       [](v1::GenerateRequest& r) { r.set_top_p(0.0f); }},
      {"top_p > 1",
       {"top_p must be in (0, 1], got 1.5"},
       [](v1::GenerateRequest& r) { r.set_top_p(1.5f); }},
      {"top_p NaN",
       {"top_p"},
       [](v1::GenerateRequest& r) { r.set_top_p(NAN); }},
      {"min_p > 1",
       {"min_p must be in [0, 1]"},
       [](v1::GenerateRequest& r) { r.set_min_p(1.1f); }},
      {"min_p < 0",
       {"min_p"},
       [](v1::GenerateRequest& r) { r.set_min_p(-0.1f); }},
      {"repetition_penalty = 0",
       {"repetition_penalty must be in (0, 10]"},
       [](v1::GenerateRequest& r) { r.set_repetition_penalty(0.0f); }},
      {"repetition_penalty > 10",
       {"repetition_penalty", "got 11"},
       [](v1::GenerateRequest& r) { r.set_repetition_penalty(11.0f); }},
      {"presence_penalty > 2",
       {"presence_penalty must be in [-2, 2], got 2.5"},
       [](v1::GenerateRequest& r) { r.set_presence_penalty(2.5f); }},
      {"presence_penalty < -2",
       {"presence_penalty"},
       [](v1::GenerateRequest& r) { r.set_presence_penalty(-2.5f); }},
      {"frequency_penalty < -2",
       {"frequency_penalty must be in [-2, 2], got -3"},
       [](v1::GenerateRequest& r) { r.set_frequency_penalty(-3.0f); }},
      {"frequency_penalty > 2",
       {"frequency_penalty"},
       [](v1::GenerateRequest& r) { r.set_frequency_penalty(2.5f); }},
      {"max_new_tokens = 0",
       {"max_new_tokens must be in [1, 8192] (--max-new-tokens-limit), got 0"},
       [](v1::GenerateRequest& r) { r.set_max_new_tokens(0); }},
      {"max_new_tokens > limit",
       {"max_new_tokens", "got 8193"},
       [](v1::GenerateRequest& r) { r.set_max_new_tokens(8193); }},
      {"max_new_tokens < 0",
       {"max_new_tokens", "got -5"},
       [](v1::GenerateRequest& r) { r.set_max_new_tokens(-5); }},
      {"too many stop sequences",
       {"stop must have at most 16 sequences, got 17"},
       [](v1::GenerateRequest& r) {
         for (int i = 0; i < 17; ++i) r.add_stop(absl::StrCat("s", i));
       }},
      {"empty stop sequence",
       {"stop[1] must not be empty"},
       [](v1::GenerateRequest& r) {
         r.add_stop("ok");
         r.add_stop("");
       }},
      {"stop sequence too long",
       {"stop[0] must have 1 to 256 bytes, got 257"},
       [](v1::GenerateRequest& r) { r.add_stop(std::string(257, 'x')); }},
      {"stop sequence not UTF-8",
       {"stop[0] must be valid UTF-8"},
       [](v1::GenerateRequest& r) { r.add_stop("\xff\xfe"); }},
      {"too many stop token ids",
       {"stop_token_ids must have at most 64 ids, got 65"},
       [](v1::GenerateRequest& r) {
         for (int i = 0; i < 65; ++i) r.add_stop_token_ids(5);
       }},
      {"stop token id outside the vocabulary",
       {"stop_token_ids[1] must be a token id in [0, 259), got 300"},
       [](v1::GenerateRequest& r) {
         r.add_stop_token_ids(5);
         r.add_stop_token_ids(300);
       }},
      {"top_logprobs > limit",
       {"top_logprobs must be in [0, 20], got 21"},
       [](v1::GenerateRequest& r) { r.set_top_logprobs(21); }},
      {"top_logprobs < 0",
       {"top_logprobs", "got -1"},
       [](v1::GenerateRequest& r) { r.set_top_logprobs(-1); }},
      {"request_id too long",
       {"request_id must have at most 128 characters, got 129"},
       [](v1::GenerateRequest& r) { r.set_request_id(std::string(129, 'a')); }},
      {"request_id not printable",
       {"request_id must be printable ASCII, got a byte 0x0a"},
       [](v1::GenerateRequest& r) { r.set_request_id("a\nb"); }},
  };
  for (const InvalidGenerateCase& invalid : cases) {
    SCOPED_TRACE(invalid.name);
    v1::GenerateRequest request = ValidGenerate();
    invalid.mutate(request);
    ExpectInvalid(ToGenerationRequest(request, Context(), kSeed).status(),
                  invalid.message);
  }
}

TEST_F(RequestValidationTest, PromptLimitCountsTheEosPrefix) {
  limits_.max_prompt_tokens = 3;
  v1::GenerateRequest request = ValidGenerate();  // 2 ids + eos = 3
  EXPECT_TRUE(ToGenerationRequest(request, Context(), kSeed).ok());
  request.mutable_token_ids()->add_ids(7);
  ExpectInvalid(
      ToGenerationRequest(request, Context(), kSeed).status(),
      {"the prompt has 4 tokens (eos prefix included), more than the limit "
       "of 3 (--max-prompt-tokens)"});
  request.set_no_eos_prefix(true);
  EXPECT_TRUE(ToGenerationRequest(request, Context(), kSeed).ok());
}

TEST_F(RequestValidationTest, HugeTextIsRefusedBeforeTokenizing) {
  limits_.max_prompt_tokens = 2;
  v1::GenerateRequest request;
  request.set_text(std::string(64 * 3, 'x'));
  ExpectInvalid(ToGenerationRequest(request, Context(), kSeed).status(),
                {"text has 192 bytes, far more than the prompt limit of 2 "
                 "tokens (--max-prompt-tokens)"});
  // Within bytes / 64 the tokenizer runs and the token limit applies.
  request.set_text(std::string(64 * 2, 'x'));
  ExpectInvalid(ToGenerationRequest(request, Context(), kSeed).status(),
                {"the prompt has 129 tokens"});
}

// ------------------------------------------------------------ Score

TEST_F(RequestValidationTest, ValidScore) {
  v1::ScoreRequest request = ValidScore();
  request.set_top_logprobs(3);
  request.set_request_id("score-1");
  absl::StatusOr<scheduler::ScoreRequest> out =
      ToScoreRequest(request, Context());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->tokens, ElementsAre(1, 5, 6));
  EXPECT_EQ(out->top_logprobs, 3);
  EXPECT_EQ(out->request_id, "score-1");

  v1::ScoreRequest text;
  text.set_text("a");
  out = ToScoreRequest(text, Context());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->tokens, ElementsAre(1, 'a' + 3));
  EXPECT_THAT(out->request_id, StartsWith("req-"));
}

struct InvalidScoreCase {
  std::string name;
  std::vector<std::string> message;
  std::function<void(v1::ScoreRequest&)> mutate;
};

TEST_F(RequestValidationTest, EveryInvalidScoreFieldIsNamed) {
  const std::vector<InvalidScoreCase> cases = {
      {"no input",
       {"text or token_ids is required"},
       [](v1::ScoreRequest& r) { r.clear_input(); }},
      {"empty text",
       {"text must not be empty"},
       [](v1::ScoreRequest& r) { r.set_text(""); }},
      {"empty token_ids",
       {"token_ids must not be empty"},
       [](v1::ScoreRequest& r) { r.mutable_token_ids()->clear_ids(); }},
      {"token id outside the vocabulary",
       {"token_ids[1] must be a token id in [0, 259), got 259"},
       [](v1::ScoreRequest& r) { r.mutable_token_ids()->set_ids(1, 259); }},
      {"one token without the eos prefix",
       {"the scored sequence must have at least 2 tokens (eos prefix "
        "included), got 1"},
       [](v1::ScoreRequest& r) {
         r.set_no_eos_prefix(true);
         r.mutable_token_ids()->mutable_ids()->RemoveLast();
       }},
      {"top_logprobs > limit",
       {"top_logprobs must be in [0, 20], got 21"},
       [](v1::ScoreRequest& r) { r.set_top_logprobs(21); }},
      {"request_id not printable",
       {"request_id must be printable ASCII"},
       [](v1::ScoreRequest& r) { r.set_request_id("\x01"); }},
  };
  for (const InvalidScoreCase& invalid : cases) {
    SCOPED_TRACE(invalid.name);
    v1::ScoreRequest request = ValidScore();
    invalid.mutate(request);
    ExpectInvalid(ToScoreRequest(request, Context()).status(), invalid.message);
  }
}

TEST_F(RequestValidationTest, ScoreObeysThePromptLimit) {
  limits_.max_prompt_tokens = 2;
  ExpectInvalid(ToScoreRequest(ValidScore(), Context()).status(),
                {"the prompt has 3 tokens", "(--max-prompt-tokens)"});
}

// ------------------------------------------------------------ Tokenize,
// Detokenize, request ids

TEST_F(RequestValidationTest, TokenizeAddsTheEosPrefixUnlessAsked) {
  v1::TokenizeRequest request;
  request.set_text("ab");
  absl::StatusOr<std::vector<int32_t>> ids = TokenizeText(request, Context());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(1, 'a' + 3, 'b' + 3));
  request.set_no_eos_prefix(true);
  ids = TokenizeText(request, Context());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre('a' + 3, 'b' + 3));
  // Empty text is valid: just the prefix.
  request.set_text("");
  request.set_no_eos_prefix(false);
  ids = TokenizeText(request, Context());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(1));
}

TEST_F(RequestValidationTest, DetokenizeChecksEveryId) {
  v1::DetokenizeRequest request;
  request.add_token_ids(0);
  request.add_token_ids(258);
  EXPECT_TRUE(ValidateDetokenizeRequest(request, Context()).ok());
  request.add_token_ids(259);
  ExpectInvalid(ValidateDetokenizeRequest(request, Context()),
                {"token_ids[2] must be a token id in [0, 259), got 259"});
  request.set_token_ids(2, -3);
  ExpectInvalid(ValidateDetokenizeRequest(request, Context()),
                {"token_ids[2]", "got -3"});
}

TEST_F(RequestValidationTest, GeneratedRequestIdsDiffer) {
  absl::StatusOr<std::string> first = ResolveRequestId("", 128);
  absl::StatusOr<std::string> second = ResolveRequestId("", 128);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(*first, *second);
  EXPECT_THAT(*first, StartsWith("req-"));
  EXPECT_EQ(*ResolveRequestId("given", 5), "given");
  ExpectInvalid(ResolveRequestId("toolong", 5).status(),
                {"request_id must have at most 5 characters, got 7"});
}

// ---- sessions

TEST_F(RequestValidationTest, GenerateInASessionTakesTheTokensAsGiven) {
  v1::GenerateRequest request;
  request.set_session_id("chat-1");
  absl::StatusOr<scheduler::GenerationRequest> empty =
      ToGenerationRequest(request, Context(), kSeed);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->prompt.empty());  // the session supplies the input
  request.mutable_token_ids()->add_ids(7);
  absl::StatusOr<scheduler::GenerationRequest> one =
      ToGenerationRequest(request, Context(), kSeed);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(one->prompt, ElementsAre(7));  // no eos prefix here
  request.set_session_id("with space");
  const absl::Status bad =
      ToGenerationRequest(request, Context(), kSeed).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("session_id"));
}

TEST_F(RequestValidationTest, ScoreInASessionNeedsOneToken) {
  v1::ScoreRequest request;
  request.set_session_id("s");
  request.mutable_token_ids()->add_ids(9);
  absl::StatusOr<scheduler::ScoreRequest> score =
      ToScoreRequest(request, Context());
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_THAT(score->tokens, ElementsAre(9));
  request.clear_token_ids();
  EXPECT_EQ(ToScoreRequest(request, Context()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(RequestValidationTest, CreateAppendAndForkSessionFields) {
  v1::CreateSessionRequest create;
  absl::StatusOr<sessions::SessionManager::CreateParams> params =
      ToCreateSessionParams(create, Context());
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_TRUE(params->prompt.empty());
  EXPECT_TRUE(params->session_id.empty());
  create.set_text("hi");
  create.set_ttl_seconds(60);
  create.set_pinned(true);
  params = ToCreateSessionParams(create, Context());
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_THAT(params->prompt, ElementsAre('h' + 3, 'i' + 3));
  EXPECT_EQ(params->ttl, absl::Seconds(60));
  EXPECT_TRUE(params->pinned);
  create.set_ttl_seconds(-5);
  EXPECT_THAT(ToCreateSessionParams(create, Context()).status().message(),
              HasSubstr("ttl_seconds"));
  create.set_ttl_seconds(0);
  create.set_session_id(std::string(129, 'x'));
  EXPECT_THAT(ToCreateSessionParams(create, Context()).status().message(),
              HasSubstr("session_id"));

  v1::AppendToSessionRequest append;
  EXPECT_THAT(ToAppendParams(append, Context()).status().message(),
              HasSubstr("session_id is required"));
  append.set_session_id("s");
  EXPECT_EQ(ToAppendParams(append, Context()).status().code(),
            absl::StatusCode::kInvalidArgument);  // a prompt is required
  append.mutable_token_ids()->add_ids(300);
  EXPECT_THAT(ToAppendParams(append, Context()).status().message(),
              HasSubstr("token_ids"));

  v1::ForkSessionRequest fork;
  fork.set_session_id("s");
  EXPECT_TRUE(ValidateForkSessionRequest(fork).ok());
  fork.set_new_session_id("a\nb");
  EXPECT_THAT(ValidateForkSessionRequest(fork).message(),
              HasSubstr("new_session_id"));
}

}  // namespace
}  // namespace tvq::service
