// The quadratic baseline is only a fair yardstick if it computes softmax
// attention correctly: its exponential against std::exp, its attention
// against a naive float64 softmax attention, its cache against the
// prefill/decode identity, and batch invariance of its decode.
#include <cmath>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "server/backend/backend.h"
#include "tests/bench/quadratic/quadratic_transformer.h"
#include "tests/bench/quadratic/softmax_attention.h"
#include "tests/bench/quadratic/softmax_rows.h"
#include "tests/support/test_util.h"

namespace tvq::bench {
namespace {

std::unique_ptr<runtime::Backend> Cpu() {
  return runtime::CreateBackend({.device = "cpu", .num_threads = 2}).value();
}

TEST(SoftmaxRowsTest, ExponentialMatchesStdExpWithinOneMillionth) {
  double worst = 0;
  for (int i = 0; i <= 870000; ++i) {
    const float x = -87.0f * static_cast<float>(i) / 870000.0f;
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(ExpNonPositive(x) - exact) / exact);
  }
  EXPECT_LT(worst, 1e-6);
  EXPECT_EQ(ExpNonPositive(0.0f), 1.0f);
  EXPECT_LT(ExpNonPositive(-1000.0f), 1e-37f);
}

TEST(SoftmaxRowsTest, RowPrefixIsASoftmaxAndTheTailIsMasked) {
  std::vector<float> row = {3.0f, -1.0f, 0.5f, 100.0f, 7.0f};
  SoftmaxRowPrefix(row.data(), 3, 5);
  const double z = std::exp(3.0) + std::exp(-1.0) + std::exp(0.5);
  EXPECT_NEAR(row[0], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(row[1], std::exp(-1.0) / z, 1e-6);
  EXPECT_NEAR(row[2], std::exp(0.5) / z, 1e-6);
  EXPECT_EQ(row[3], 0.0f);
  EXPECT_EQ(row[4], 0.0f);
}

// out[i] = sum_j softmax_j(q_i . k_j) v_j over j <= first + i, in float64.
std::vector<double> NaiveAttention(const AttentionDims& dims,
                                   const std::vector<float>& q, int64_t first,
                                   int n, const std::vector<float>& cache) {
  const int H = dims.n_head, dk = dims.d_k, dv = dims.d_v,
            row = dims.cache_row();
  std::vector<double> out(static_cast<size_t>(n) * H * dv, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < H; ++h) {
      const int64_t keys = first + i + 1;
      std::vector<double> scores(keys);
      double max = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < keys; ++j) {
        double dot = 0;
        for (int c = 0; c < dk; ++c) {
          dot += static_cast<double>(q[(i * H + h) * dk + c]) *
                 cache[j * row + h * dk + c];
        }
        scores[j] = dot;
        max = std::max(max, dot);
      }
      double z = 0;
      for (double& s : scores) z += (s = std::exp(s - max));
      for (int64_t j = 0; j < keys; ++j) {
        for (int c = 0; c < dv; ++c) {
          out[(i * H + h) * dv + c] +=
              scores[j] / z * cache[j * row + H * dk + h * dv + c];
        }
      }
    }
  }
  return out;
}

struct AttentionCase {
  int64_t first;
  int n;
  bool decode;
};

void PrintTo(const AttentionCase& c, std::ostream* os) {
  *os << (c.decode ? "decode" : "prefill") << " of " << c.n
      << " queries after " << c.first << " keys";
}

class SoftmaxAttentionTest : public ::testing::TestWithParam<AttentionCase> {};

// Two heads, query blocks of 64 so that the prefill cases cross blocks.
TEST_P(SoftmaxAttentionTest, EqualsNaiveSoftmaxAttentionWithin2e5) {
  const AttentionCase c = GetParam();
  const AttentionDims dims{2, 16, 24};
  std::unique_ptr<runtime::Backend> backend = Cpu();
  std::unique_ptr<SoftmaxAttention> attention =
      SoftmaxAttention::Create(*backend, dims, 2, 64, 1024).value();
  std::mt19937 generator(static_cast<uint32_t>(c.first * 31 + c.n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t keys = c.first + c.n;
  std::vector<float> q(static_cast<size_t>(c.n) * dims.n_head * dims.d_k);
  std::vector<float> cache(static_cast<size_t>(keys) * dims.cache_row());
  // Scores of a few units (q and k with |.| ~ d_k^(1/4)): a peaked softmax.
  for (float& value : q) value = normal(generator);
  for (float& value : cache) value = normal(generator) * 0.5f;
  std::vector<float> out(static_cast<size_t>(c.n) * dims.n_head * dims.d_v,
                         std::numeric_limits<float>::quiet_NaN());
  const int q_stride = dims.n_head * dims.d_k,
            out_stride = dims.n_head * dims.d_v;
  if (c.decode) {
    // One query at a time, as the decode loop calls it.
    for (int i = 0; i < c.n; ++i) {
      ASSERT_TRUE(attention
                      ->Run(q.data() + i * q_stride, q_stride, c.first + i, 1,
                            cache.data(), out.data() + i * out_stride,
                            out_stride, true)
                      .ok());
    }
  } else {
    ASSERT_TRUE(attention
                    ->Run(q.data(), q_stride, c.first, c.n, cache.data(),
                          out.data(), out_stride, false)
                    .ok());
  }
  const std::vector<double> expected =
      NaiveAttention(dims, q, c.first, c.n, cache);
  double worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_FALSE(std::isnan(out[i])) << "output " << i << " not written";
    worst = std::max(worst, std::abs(out[i] - expected[i]));
  }
  EXPECT_LT(worst, 2e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SoftmaxAttentionTest,
    ::testing::Values(AttentionCase{0, 1, false}, AttentionCase{0, 200, false},
                      AttentionCase{37, 150, false},
                      AttentionCase{500, 64, false}, AttentionCase{0, 5, true},
                      AttentionCase{700, 3, true}));

TEST(SoftmaxAttentionTest, IsCausalWithinABlock) {
  const AttentionDims dims{1, 8, 8};
  std::unique_ptr<runtime::Backend> backend = Cpu();
  std::unique_ptr<SoftmaxAttention> attention =
      SoftmaxAttention::Create(*backend, dims, 1, 64, 64).value();
  std::mt19937 generator(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(16 * 8), cache(16 * 16), first(16 * 8), second(16 * 8);
  for (float& value : q) value = normal(generator);
  for (float& value : cache) value = normal(generator);
  ASSERT_TRUE(attention->Run(q.data(), 8, 0, 16, cache.data(), first.data(), 8,
                             false)
                  .ok());
  for (int c = 0; c < 16; ++c) cache[15 * 16 + c] += 3.0f;  // the last token
  ASSERT_TRUE(attention->Run(q.data(), 8, 0, 16, cache.data(), second.data(),
                             8, false)
                  .ok());
  for (int i = 0; i < 15 * 8; ++i) EXPECT_EQ(first[i], second[i]) << i;
  EXPECT_NE(first[15 * 8], second[15 * 8]);
}

TEST(SoftmaxAttentionTest, RefusesMoreKeysThanSized) {
  std::unique_ptr<runtime::Backend> backend = Cpu();
  std::unique_ptr<SoftmaxAttention> attention =
      SoftmaxAttention::Create(*backend, {1, 4, 4}, 1, 8, 10).value();
  std::vector<float> q(4 * 4), cache(11 * 8), out(4 * 4);
  const absl::Status status =
      attention->Run(q.data(), 4, 8, 3, cache.data(), out.data(), 4, false);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("11 keys"), std::string::npos)
      << status.message();
}

runtime::ModelConfig TinyConfig() {
  return testing::SmallConfig(32, 16, 48, 2, 16, 2, 8, 8);
}

double MaxDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = a.size() == b.size() ? 0 : 1e30;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return worst;
}

TEST(QuadraticTransformerTest, DecodeAfterPrefillEqualsOneLongerPrefill) {
  std::unique_ptr<runtime::Backend> backend = Cpu();
  const auto weights = testing::RandomModel(TinyConfig(), 3);
  auto model = QuadraticTransformer::Create(
                   *weights, *backend,
                   {.num_slots = 2, .max_context = 300, .max_prefill_chunk = 64,
                    .query_block = 16, .threads = 2})
                   .value();
  const std::vector<int32_t> tokens = testing::RandomTokens(200, 259, 9);
  std::vector<float> whole, prefix, decoded;
  ASSERT_TRUE(model->Prefill(0, tokens, true, &whole).ok());
  ASSERT_TRUE(model->Prefill(1, std::span(tokens).first(199), false, &prefix).ok());
  const int slot = 1;
  ASSERT_TRUE(model->DecodeStep({&slot, 1}, {&tokens[199], 1}, &decoded).ok());
  ASSERT_EQ(whole.size(), 259u);
  EXPECT_EQ(model->position(0), 200);
  EXPECT_EQ(model->position(1), 200);
  // BLAS (prefill) against the batch-invariant GEMM (decode): rounding only.
  EXPECT_LT(MaxDifference(whole, decoded), 1e-4);
}

TEST(QuadraticTransformerTest, ChunkingDoesNotChangeTheResult) {
  std::unique_ptr<runtime::Backend> backend = Cpu();
  const auto weights = testing::RandomModel(TinyConfig(), 4);
  const std::vector<int32_t> tokens = testing::RandomTokens(150, 259, 2);
  std::vector<float> chunked, whole;
  auto small = QuadraticTransformer::Create(
                   *weights, *backend,
                   {.max_context = 150, .max_prefill_chunk = 40, .query_block = 16})
                   .value();
  ASSERT_TRUE(small->Prefill(0, tokens, true, &chunked).ok());
  auto large = QuadraticTransformer::Create(
                   *weights, *backend,
                   {.max_context = 150, .max_prefill_chunk = 150, .query_block = 150})
                   .value();
  ASSERT_TRUE(large->Prefill(0, tokens, true, &whole).ok());
  EXPECT_LT(MaxDifference(chunked, whole), 1e-5);
  // And the context matters: a different first token changes the result.
  std::vector<int32_t> changed = tokens;
  changed[1] = changed[1] == 5 ? 6 : 5;
  std::vector<float> other;
  ASSERT_TRUE(large->Reset(0).ok());
  ASSERT_TRUE(large->Prefill(0, changed, true, &other).ok());
  EXPECT_GT(MaxDifference(whole, other), 1e-4);
}

TEST(QuadraticTransformerTest, BatchedDecodeIsBitwiseTheSameAsAlone) {
  std::unique_ptr<runtime::Backend> backend = Cpu();
  const auto weights = testing::RandomModel(TinyConfig(), 5);
  auto model = QuadraticTransformer::Create(
                   *weights, *backend, {.num_slots = 6, .max_context = 128})
                   .value();
  const int lengths[3] = {10, 77, 120};
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> tokens =
        testing::RandomTokens(lengths[s], 259, 20 + s);
    ASSERT_TRUE(model->Prefill(s, tokens, false, nullptr).ok());
    ASSERT_TRUE(model->CopySlot(s, s + 3).ok());
  }
  const int batch_slots[3] = {0, 1, 2};
  const int32_t next[3] = {40, 41, 42};
  std::vector<float> batched;
  ASSERT_TRUE(model->DecodeStep(batch_slots, next, &batched).ok());
  for (int s = 0; s < 3; ++s) {
    const int slot = s + 3;
    std::vector<float> alone;
    ASSERT_TRUE(model->DecodeStep({&slot, 1}, {&next[s], 1}, &alone).ok());
    for (int v = 0; v < 259; ++v) {
      ASSERT_EQ(alone[v], batched[s * 259 + v]) << "slot " << s << " token " << v;
    }
  }
}

TEST(QuadraticTransformerTest, ErrorsNameTheProblem) {
  std::unique_ptr<runtime::Backend> backend = Cpu();
  const auto weights = testing::RandomModel(TinyConfig(), 6);
  auto model = QuadraticTransformer::Create(
                   *weights, *backend, {.num_slots = 2, .max_context = 16})
                   .value();
  const std::vector<int32_t> tokens = testing::RandomTokens(20, 259, 1);
  absl::Status status = model->Prefill(0, tokens, false, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("its cache holds 16"), std::string::npos)
      << status.message();
  const int twice[2] = {1, 1};
  const int32_t two[2] = {3, 4};
  std::vector<float> logprobs;
  status = model->DecodeStep(twice, two, &logprobs);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("slot 1 appears twice"), std::string::npos);
  const int32_t bad = 9999;
  const int slot = 0;
  status = model->DecodeStep({&slot, 1}, {&bad, 1}, &logprobs);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
      << status.message();
  EXPECT_EQ(QuadraticTransformer::Create(*weights, *backend, {.num_slots = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QuadraticTransformerTest, CacheBytesGrowWithTheContext) {
  const runtime::ModelConfig config =
      testing::SmallConfig(256, 128, 512, 1, 256, 4, 128, 128);
  // 8 sublayers x (128 + 512) floats.
  EXPECT_EQ(QuadraticTransformer::CacheBytesPerToken(config), 8u * 640 * 4);
}

}  // namespace
}  // namespace tvq::bench
