// The constant-size decode state: equality of prefill and token-by-token
// states, size independent of length, fork, export/import, reset.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/backend/cpu/cpu_backend.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "tests/support/test_util.h"

namespace tvq::runtime {
namespace {

// Reads the float and int arrays of one exported slot back for comparison.
struct ExportedState {
  int64_t position = 0;
  std::vector<float> floats;
  std::vector<int32_t> codes;
};

ExportedState Decompose(const ModelConfig& config, const std::string& bytes) {
  // Layout: 40-byte header (magic .. position), then per sublayer counts
  // [H,S] f32, means [H,S,dv] f32, window codes [H,M] i32, window values
  // [H,M,dv] f32.
  ExportedState state;
  std::memcpy(&state.position, bytes.data() + 32, sizeof(int64_t));
  const size_t H = config.n_head, S = config.n_code, M = config.mem_len, dv = config.d_v;
  const char* cursor = bytes.data() + 40;
  auto take_floats = [&](size_t count) {
    const size_t offset = state.floats.size();
    state.floats.resize(offset + count);
    std::memcpy(state.floats.data() + offset, cursor, count * 4);
    cursor += count * 4;
  };
  for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
    take_floats(H * S);
    take_floats(H * S * dv);
    const size_t offset = state.codes.size();
    state.codes.resize(offset + H * M);
    std::memcpy(state.codes.data() + offset, cursor, H * M * 4);
    cursor += H * M * 4;
    take_floats(H * M * dv);
  }
  return state;
}

class StatePoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = testing::SmallConfig(32, 8, 16, 2, 12, 2, 8, 10);
    config_.agg_cache = true;
    weights_ = testing::RandomModel(config_, 7);
    engine_ = TransformerVq::Create(*weights_, backend_).value();
  }
  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  CpuBackend backend_{2};
  std::unique_ptr<TransformerVq> engine_;
};

TEST_F(StatePoolTest, PrefillStateEqualsTokenByTokenState) {
  auto pool = StatePool::Create(config_, backend_, 2).value();
  const std::vector<int32_t> tokens = testing::RandomTokens(93, config_.n_vocab, 5);
  std::vector<float> logprobs;
  ASSERT_TRUE(engine_->Prefill(*pool, 0, tokens, LogprobRows::kNone, nullptr).ok());
  const int slot = 1;
  for (int32_t token : tokens) {
    ASSERT_TRUE(engine_->DecodeStep(*pool, {&slot, 1}, {&token, 1}, &logprobs).ok());
  }
  const ExportedState prefilled = Decompose(config_, pool->Export(0).value());
  const ExportedState stepped = Decompose(config_, pool->Export(1).value());
  EXPECT_EQ(prefilled.position, 93);
  EXPECT_EQ(stepped.position, 93);
  // Codes decide everything downstream: they must be identical.
  EXPECT_EQ(prefilled.codes, stepped.codes);
  // Values and counts agree to float32 rounding: the two paths compute the
  // same values with GEMMs of different shapes (different summation
  // orders); 1e-5 is ~100 ulp of these O(1) values.
  ASSERT_EQ(prefilled.floats.size(), stepped.floats.size());
  for (size_t i = 0; i < prefilled.floats.size(); ++i) {
    ASSERT_NEAR(prefilled.floats[i], stepped.floats[i], 1e-5) << "float " << i;
  }
}

TEST_F(StatePoolTest, BytesPerSlotIsConstantAndMatchesTheFormula) {
  // Spec §3: per sublayer count [H,S] f32 + mean [H,S,dv] f32 + window codes
  // [H,M] i32 + window values [H,M,dv] f32, plus one int64 position.
  const size_t H = 2, S = 12, M = 10, dv = 16;
  const size_t expected = 8 + 4 * (4 * H * S + 4 * H * S * dv + 4 * H * M + 4 * H * M * dv);
  auto pool = StatePool::Create(config_, backend_, 1).value();
  EXPECT_EQ(pool->BytesPerSlot(), expected);
  EXPECT_EQ(StatePool::BytesPerSlotFor(config_), expected);
  ASSERT_TRUE(engine_->Prefill(*pool, 0, testing::RandomTokens(10, 259, 1), LogprobRows::kNone, nullptr).ok());
  const size_t after_ten = pool->Export(0).value().size();
  EXPECT_EQ(pool->BytesPerSlot(), expected);
  ASSERT_TRUE(engine_->Prefill(*pool, 0, testing::RandomTokens(10000, 259, 2), LogprobRows::kNone, nullptr).ok());
  EXPECT_EQ(pool->position(0), 10010);
  EXPECT_EQ(pool->Export(0).value().size(), after_ten);
  EXPECT_EQ(pool->BytesPerSlot(), expected);
}

TEST_F(StatePoolTest, ForkExportImportReset) {
  auto pool = StatePool::Create(config_, backend_, 3).value();
  const std::vector<int32_t> prefix = testing::RandomTokens(40, 259, 11);
  const std::vector<int32_t> suffix = testing::RandomTokens(15, 259, 12);
  ASSERT_TRUE(engine_->Prefill(*pool, 0, prefix, LogprobRows::kNone, nullptr).ok());
  ASSERT_TRUE(pool->Copy(0, 1).ok());
  const std::string exported = pool->Export(0).value();
  ASSERT_TRUE(pool->Import(2, exported).ok());
  EXPECT_EQ(pool->position(2), 40);
  // All three continue identically.
  std::vector<float> a, b, c;
  ASSERT_TRUE(engine_->Prefill(*pool, 0, suffix, LogprobRows::kAll, &a).ok());
  ASSERT_TRUE(engine_->Prefill(*pool, 1, suffix, LogprobRows::kAll, &b).ok());
  ASSERT_TRUE(engine_->Prefill(*pool, 2, suffix, LogprobRows::kAll, &c).ok());
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  // Reset returns a slot to the empty state.
  ASSERT_TRUE(pool->Reset(1).ok());
  EXPECT_EQ(pool->position(1), 0);
  auto fresh = StatePool::Create(config_, backend_, 1).value();
  EXPECT_EQ(pool->Export(1).value(), fresh->Export(0).value());
}

TEST_F(StatePoolTest, BadImportsAndSlotsAreRejected) {
  auto pool = StatePool::Create(config_, backend_, 2).value();
  std::string exported = pool->Export(0).value();
  EXPECT_EQ(pool->Import(0, exported.substr(1)).code(), absl::StatusCode::kInvalidArgument);
  std::string bad_magic = exported;
  bad_magic[0] = 'X';
  EXPECT_EQ(pool->Import(0, bad_magic).code(), absl::StatusCode::kInvalidArgument);
  std::string bad_code = exported;
  // The first window code of sublayer 0 sits after counts and means.
  const size_t code_offset = 40 + 4 * (2 * 12 + 2 * 12 * 16);
  const int32_t out_of_range = 12;
  std::memcpy(bad_code.data() + code_offset, &out_of_range, 4);
  absl::Status status = pool->Import(0, bad_code);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("code"), std::string::npos) << status;
  ModelConfig other = config_;
  other.mem_len = 11;
  auto other_pool = StatePool::Create(other, backend_, 1).value();
  EXPECT_EQ(other_pool->Import(0, exported).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->Reset(2).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(pool->Copy(0, -1).code(), absl::StatusCode::kOutOfRange);
  EXPECT_FALSE(StatePool::Create(config_, backend_, 0).ok());
}

}  // namespace
}  // namespace tvq::runtime
