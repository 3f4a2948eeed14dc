#include "server/engine/sampler.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace tvq::runtime {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Logprobs of a normalized distribution.
std::vector<float> LogOf(const std::vector<double>& probabilities) {
  std::vector<float> out;
  for (double p : probabilities) {
    out.push_back(p > 0 ? static_cast<float>(std::log(p)) : kNegInf);
  }
  return out;
}

// Draws `steps` tokens with a fresh sampler per step (no penalties carry
// over) and returns each token's frequency.
std::vector<double> Frequencies(const SamplingParams& params,
                                const std::vector<float>& row, int steps) {
  std::vector<double> counts(row.size(), 0);
  for (int step = 0; step < steps; ++step) {
    Sampler sampler(params, static_cast<int>(row.size()));
    auto token = sampler.Sample(row, step);
    EXPECT_TRUE(token.ok()) << token.status();
    counts[*token] += 1;
  }
  for (double& c : counts) c /= steps;
  return counts;
}

TEST(CounterUniformTest, IsAPureFunctionOfSeedAndStep) {
  EXPECT_EQ(CounterUniform(7, 3), CounterUniform(7, 3));
  EXPECT_NE(CounterUniform(7, 3), CounterUniform(7, 4));
  EXPECT_NE(CounterUniform(7, 3), CounterUniform(8, 3));
  EXPECT_NE(CounterUniform(0, 0), CounterUniform(0, 1));
}

TEST(CounterUniformTest, IsUniformOnTheUnitInterval) {
  constexpr int kDraws = 200000;
  constexpr int kBins = 20;
  std::vector<int> bins(kBins, 0);
  double sum = 0;
  for (int i = 0; i < kDraws; ++i) {
    const double u = CounterUniform(42, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ++bins[static_cast<int>(u * kBins)];
  }
  // Mean of 200k uniforms: standard deviation ~0.00065.
  EXPECT_NEAR(sum / kDraws, 0.5, 0.004);
  // Each bin expects 10000 (sd ~98).
  for (int b = 0; b < kBins; ++b) EXPECT_NEAR(bins[b], kDraws / kBins, 600);
}

TEST(CounterUniformTest, ConsecutiveSeedsAreIndependent) {
  // Same step, seeds 0..N-1: also uniform (seeds are often small integers).
  constexpr int kDraws = 50000;
  double sum = 0;
  for (int seed = 0; seed < kDraws; ++seed) sum += CounterUniform(seed, 0);
  EXPECT_NEAR(sum / kDraws, 0.5, 0.01);
}

TEST(TopAlternativesTest, LargestFirstLowerIdOnTies) {
  const std::vector<float> row = {-3, -1, -2, -1, -0.5f, -7};
  std::vector<TokenAlternative> top;
  TopAlternatives(row, 3, &top);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].token_id, 4);
  EXPECT_EQ(top[1].token_id, 1);
  EXPECT_EQ(top[2].token_id, 3);
  EXPECT_FLOAT_EQ(top[1].logprob, -1);
  TopAlternatives(row, 100, &top);
  ASSERT_EQ(top.size(), row.size());
  EXPECT_EQ(top.back().token_id, 5);
  TopAlternatives(row, 0, &top);
  EXPECT_TRUE(top.empty());
}

TEST(SamplerTest, GreedyPicksTheArgmaxLowestIdOnTies) {
  SamplingParams params;
  params.temperature = 0;
  Sampler sampler(params, 5);
  EXPECT_EQ(*sampler.Sample(std::vector<float>{-3, -1, -2, -1, -4}, 0), 1);
  for (uint64_t seed : {0ull, 1ull, 99ull}) {
    params.seed = seed;
    Sampler other(params, 5);
    EXPECT_EQ(*other.Sample(std::vector<float>{-3, -2, -0.1f, -2, -4}, seed),
              2);
  }
}

TEST(SamplerTest, TopKOneIsGreedyForEverySeed) {
  SamplingParams params;
  params.top_k = 1;
  const auto row = LogOf({0.2, 0.3, 0.25, 0.25});
  for (uint64_t step = 0; step < 200; ++step) {
    params.seed = step * 31;
    Sampler sampler(params, 4);
    EXPECT_EQ(*sampler.Sample(row, step), 1);
  }
}

TEST(SamplerTest, TemperatureOneMatchesTheModelDistribution) {
  const std::vector<double> p = {0.5, 0.25, 0.15, 0.1};
  SamplingParams params;
  params.seed = 5;
  const auto freq = Frequencies(params, LogOf(p), 40000);
  // sd of a frequency at n=40000 is <= 0.0025.
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(freq[i], p[i], 0.012);
}

TEST(SamplerTest, TemperatureSharpensAndFlattens) {
  const std::vector<double> p = {0.6, 0.3, 0.1};
  SamplingParams params;
  params.seed = 11;
  params.temperature = 0.5f;  // p^2, renormalized: 0.783, 0.196, 0.022
  auto freq = Frequencies(params, LogOf(p), 40000);
  EXPECT_NEAR(freq[0], 0.36 / 0.46, 0.012);
  EXPECT_NEAR(freq[2], 0.01 / 0.46, 0.006);
  params.temperature = 100.0f;  // nearly uniform
  freq = Frequencies(params, LogOf(p), 40000);
  for (double f : freq) EXPECT_NEAR(f, 1.0 / 3, 0.015);
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  const std::vector<double> p = {0.1, 0.4, 0.2, 0.3};
  SamplingParams params;
  params.top_k = 2;
  const auto freq = Frequencies(params, LogOf(p), 20000);
  EXPECT_EQ(freq[0], 0);
  EXPECT_EQ(freq[2], 0);
  EXPECT_NEAR(freq[1], 0.4 / 0.7, 0.015);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  const std::vector<double> p = {0.5, 0.3, 0.2};
  SamplingParams params;
  params.top_p = 0.6f;  // 0.5 < 0.6 <= 0.8: the two most likely
  auto freq = Frequencies(params, LogOf(p), 20000);
  EXPECT_EQ(freq[2], 0);
  EXPECT_NEAR(freq[0], 0.5 / 0.8, 0.015);
  params.top_p = 0.5f;  // the most likely alone reaches 0.5
  freq = Frequencies(params, LogOf(p), 2000);
  EXPECT_EQ(freq[0], 1);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  const std::vector<double> p = {0.6, 0.3, 0.1};
  SamplingParams params;
  params.min_p = 0.2f;  // threshold 0.12: drops 0.1
  auto freq = Frequencies(params, LogOf(p), 20000);
  EXPECT_EQ(freq[2], 0);
  EXPECT_NEAR(freq[0], 2.0 / 3, 0.015);
  params.min_p = 1.0f;  // only the maximum survives
  freq = Frequencies(params, LogOf(p), 2000);
  EXPECT_EQ(freq[0], 1);
}

TEST(SamplerTest, RepetitionPenaltyCoversThePrompt) {
  SamplingParams params;
  params.temperature = 0;
  params.repetition_penalty = 2.0f;
  Sampler sampler(params, 3);
  sampler.ObservePrompt(std::vector<int32_t>{0});
  // log 0.5 * 2 = -1.386 < log 0.3 = -1.204: token 1 wins.
  EXPECT_EQ(*sampler.Sample(LogOf({0.5, 0.3, 0.2}), 0), 1);
}

TEST(SamplerTest, PresenceAndFrequencyPenalizeGeneratedTokens) {
  const auto row = LogOf({0.5, 0.4, 0.1});  // -0.69, -0.92, -2.30
  SamplingParams params;
  params.temperature = 0;
  params.presence_penalty = 0.5f;
  Sampler presence(params, 3);
  EXPECT_EQ(*presence.Sample(row, 0), 0);
  EXPECT_EQ(*presence.Sample(row, 1), 1);  // 0 now at -1.19
  EXPECT_EQ(*presence.Sample(row, 2), 0);  // 1 at -1.42, 0 at -1.19

  params.presence_penalty = 0;
  params.frequency_penalty = 0.2f;
  Sampler frequency(params, 3);
  std::vector<int32_t> tokens;
  for (int step = 0; step < 4; ++step) {
    tokens.push_back(*frequency.Sample(row, step));
  }
  // 0 (-0.69), 0 (-0.89 vs -0.92), 1 (0 at -1.09), 0 (-1.09 vs 1 at -1.12).
  EXPECT_EQ(tokens, (std::vector<int32_t>{0, 0, 1, 0}));
  // Prompt tokens do not count for presence/frequency.
  Sampler fresh(params, 3);
  fresh.ObservePrompt(std::vector<int32_t>{0, 0, 0});
  EXPECT_EQ(*fresh.Sample(row, 0), 0);
}

TEST(SamplerTest, DrawsDependOnlyOnSeedAndStep) {
  const auto row = LogOf({0.25, 0.25, 0.25, 0.25});
  SamplingParams params;
  params.seed = 1234;
  Sampler first(params, 4);
  Sampler second(params, 4);
  std::vector<int32_t> a, b;
  for (int step = 0; step < 64; ++step) a.push_back(*first.Sample(row, step));
  // Interleave a different sampler's draws: no shared state.
  SamplingParams other_params;
  other_params.seed = 77;
  Sampler other(other_params, 4);
  for (int step = 0; step < 64; ++step) {
    (void)*other.Sample(row, step);
    b.push_back(*second.Sample(row, step));
  }
  EXPECT_EQ(a, b);
  params.seed = 1235;
  Sampler different(params, 4);
  std::vector<int32_t> c;
  for (int step = 0; step < 64; ++step)
    c.push_back(*different.Sample(row, step));
  EXPECT_NE(a, c);
}

TEST(SamplerTest, ZeroProbabilityTokensAreNeverDrawn) {
  const auto row = LogOf({0.0, 1.0, 0.0});
  SamplingParams params;
  for (int step = 0; step < 500; ++step) {
    params.seed = step;
    Sampler sampler(params, 3);
    EXPECT_EQ(*sampler.Sample(row, step), 1);
  }
}

TEST(SamplerTest, BadRowsAreInternalErrors) {
  Sampler sampler(SamplingParams{}, 3);
  auto wrong_size = sampler.Sample(std::vector<float>{-1, -1}, 0);
  EXPECT_EQ(wrong_size.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(wrong_size.status().message().find("expected 3"),
            std::string::npos);
  auto no_finite = sampler.Sample(std::vector<float>{kNegInf, kNegInf, NAN}, 0);
  EXPECT_EQ(no_finite.status().code(), absl::StatusCode::kInternal);
  // A NaN entry is skipped, the rest still works.
  EXPECT_EQ(*Sampler({.temperature = 0}, 3)
                 .Sample(std::vector<float>{NAN, -2, -1}, 0),
            2);
}

}  // namespace
}  // namespace tvq::runtime
