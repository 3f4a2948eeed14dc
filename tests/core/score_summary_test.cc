// core::SummarizeScore: which scored tokens count as bytes, and when bits per
// byte exist.
#include "server/core/score_summary.h"

#include <cmath>

#include "gtest/gtest.h"
#include "server/model/model_config.h"
#include "server/scheduler/request.h"

namespace tvq::core {
namespace {

scheduler::ScoreResult Result(std::initializer_list<int32_t> ids,
                              double total) {
  scheduler::ScoreResult result;
  for (int32_t id : ids) {
    scheduler::TokenLogprob entry;
    entry.token_id = id;
    result.token_logprobs.push_back(entry);
  }
  result.total_logprob = total;
  return result;
}

TEST(ScoreSummaryTest, BitsPerByteSkipThePadEosAndUnkIds) {
  runtime::ModelConfig config;  // byte tokenizer; pad 0, eos 1, unk 2
  const ScoreSummary summary =
      SummarizeScore(config, Result({72, 0, 105, 1, 2, 33}, -6.0));
  EXPECT_EQ(summary.scored_bytes, 3);
  ASSERT_TRUE(summary.bits_per_byte.has_value());
  EXPECT_DOUBLE_EQ(*summary.bits_per_byte, 6.0 / std::log(2.0) / 3.0);
}

TEST(ScoreSummaryTest, NoBitsPerByteWithoutBytes) {
  runtime::ModelConfig config;
  const ScoreSummary summary = SummarizeScore(config, Result({1, 0}, -1.0));
  EXPECT_EQ(summary.scored_bytes, 0);
  EXPECT_FALSE(summary.bits_per_byte.has_value());
}

TEST(ScoreSummaryTest, NoBitsPerByteForSentencePiece) {
  runtime::ModelConfig config;
  config.tokenizer_kind = runtime::TokenizerKind::kSentencePiece;
  const ScoreSummary summary = SummarizeScore(config, Result({5, 6}, -1.0));
  EXPECT_EQ(summary.scored_bytes, 2);
  EXPECT_FALSE(summary.bits_per_byte.has_value());
}

}  // namespace
}  // namespace tvq::core
