// The whole model on the CUDA backend against the golden vectors
// (tests/data/golden) and against the CPU backend: fp32 logprobs within
// 2e-5 of the golden values and identical VQ codes on every path (prefill,
// token-by-token decode, prefill then decode, odd block lengths), decode
// rows bitwise independent of their batch peers, and states that move
// between the CPU and the GPU through export/import. Skips without a GPU.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/backend/cpu/cpu_backend.h"
#include "server/backend/cuda/cuda_backend.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "tests/support/test_util.h"

namespace tvq::runtime {
namespace {

// As the CPU golden test: the golden logprobs are float64 rounded to
// float32; a float32 engine lands within ~3e-6, and a wrong RMS epsilon
// would be ~1e-3 off.
constexpr double kLogprobTolerance = 2e-5;

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<CudaBackend>> cuda = CudaBackend::Create(0);
    if (!cuda.ok())
      GTEST_SKIP() << "no CUDA device: " << cuda.status().message();
    cuda_ = std::move(cuda).value();
    golden_ = testing::LoadGolden(GetParam());
    auto weights = ModelWeights::Load(golden_.model_dir);
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = std::move(weights).value();
    config_ = weights_->config();
    T_ = static_cast<int>(golden_.tokens.size());
  }

  std::unique_ptr<TransformerVq> Engine(Backend& backend,
                                        EngineOptions options = {}) {
    auto engine = TransformerVq::Create(*weights_, backend, options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return std::move(engine).value();
  }
  std::unique_ptr<StatePool> Pool(Backend& backend, int slots = 1) {
    auto pool = StatePool::Create(config_, backend, slots);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return std::move(pool).value();
  }

  void ExpectRows(const std::vector<float>& logprobs, int first, int count,
                  const std::string& what) {
    ASSERT_EQ(logprobs.size(), static_cast<size_t>(count) * config_.n_vocab)
        << what;
    double worst = 0;
    int worst_index = -1;
    for (size_t i = 0; i < logprobs.size(); ++i) {
      const double error = std::abs(
          static_cast<double>(logprobs[i]) -
          golden_.logprobs[static_cast<size_t>(first) * config_.n_vocab + i]);
      if (!(error <= worst)) {  // also catches NaN
        worst = error;
        worst_index = static_cast<int>(i);
      }
    }
    EXPECT_LE(worst, kLogprobTolerance)
        << what << ": worst error at row "
        << first + worst_index / config_.n_vocab << ", token "
        << worst_index % config_.n_vocab;
  }

  void ExpectCodes(const CodeTrace& codes, int first, int count,
                   const std::string& what) {
    ASSERT_EQ(codes.size(), static_cast<size_t>(config_.num_sublayers()))
        << what;
    for (int sublayer = 0; sublayer < config_.num_sublayers(); ++sublayer) {
      ASSERT_EQ(codes[sublayer].size(),
                static_cast<size_t>(config_.n_head) * count);
      for (int h = 0; h < config_.n_head; ++h) {
        for (int i = 0; i < count; ++i) {
          const int32_t expected =
              golden_
                  .codes[(static_cast<size_t>(sublayer) * config_.n_head + h) *
                             T_ +
                         first + i];
          ASSERT_EQ(codes[sublayer][static_cast<size_t>(h) * count + i],
                    expected)
              << what << ": sublayer " << sublayer << " head " << h << " token "
              << first + i;
        }
      }
    }
  }

  std::unique_ptr<CudaBackend> cuda_;
  CpuBackend cpu_{2};
  testing::GoldenCase golden_;
  std::unique_ptr<ModelWeights> weights_;
  ModelConfig config_;
  int T_ = 0;
};

TEST_P(CudaGoldenTest, PrefillWholeSequence) {
  auto engine = Engine(*cuda_);
  auto pool = Pool(*cuda_);
  std::vector<float> logprobs;
  CodeTrace codes;
  ASSERT_TRUE(engine
                  ->Prefill(*pool, 0, golden_.tokens, LogprobRows::kAll,
                            &logprobs, &codes)
                  .ok());
  ExpectRows(logprobs, 0, T_, "cuda prefill");
  ExpectCodes(codes, 0, T_, "cuda prefill");
}

TEST_P(CudaGoldenTest, TokenByTokenDecodeFromEmptyState) {
  auto engine = Engine(*cuda_);
  auto pool = Pool(*cuda_);
  const int slot = 0;
  for (int t = 0; t < T_; ++t) {
    std::vector<float> logprobs;
    CodeTrace codes;
    ASSERT_TRUE(engine
                    ->DecodeStep(*pool, {&slot, 1}, {&golden_.tokens[t], 1},
                                 &logprobs, &codes)
                    .ok());
    ExpectRows(logprobs, t, 1, "cuda decode step " + std::to_string(t));
    ExpectCodes(codes, t, 1, "cuda decode step " + std::to_string(t));
  }
}

TEST_P(CudaGoldenTest, PrefillPrefixThenDecode) {
  auto engine = Engine(*cuda_);
  for (int prefix :
       {1, config_.mem_len, config_.mem_len + 1, 2 * config_.block_len + 1}) {
    if (prefix >= T_) continue;
    SCOPED_TRACE("prefix " + std::to_string(prefix));
    auto pool = Pool(*cuda_);
    std::vector<float> logprobs;
    ASSERT_TRUE(
        engine
            ->Prefill(*pool, 0,
                      {golden_.tokens.data(), static_cast<size_t>(prefix)},
                      LogprobRows::kLast, &logprobs)
            .ok());
    ExpectRows(logprobs, prefix - 1, 1, "prefix last row");
    const int slot = 0;
    for (int t = prefix; t < T_; ++t) {
      CodeTrace codes;
      ASSERT_TRUE(engine
                      ->DecodeStep(*pool, {&slot, 1}, {&golden_.tokens[t], 1},
                                   &logprobs, &codes)
                      .ok());
      ExpectRows(logprobs, t, 1,
                 "decode after prefix, step " + std::to_string(t));
      ExpectCodes(codes, t, 1, "decode after prefix");
    }
  }
}

TEST_P(CudaGoldenTest, PrefillBlockLengthsAndChunks) {
  for (const EngineOptions& options :
       {EngineOptions{.block_len = 1}, EngineOptions{.block_len = 3},
        EngineOptions{.block_len = 2 * config_.block_len + 1},
        EngineOptions{.block_len = T_ + 5},
        EngineOptions{.block_len = 0, .max_prefill_chunk = 7}}) {
    SCOPED_TRACE("block_len " + std::to_string(options.block_len) + " chunk " +
                 std::to_string(options.max_prefill_chunk));
    auto engine = Engine(*cuda_, options);
    auto pool = Pool(*cuda_);
    std::vector<float> logprobs;
    CodeTrace codes;
    ASSERT_TRUE(engine
                    ->Prefill(*pool, 0, golden_.tokens, LogprobRows::kAll,
                              &logprobs, &codes)
                    .ok());
    ExpectRows(logprobs, 0, T_, "prefill");
    ExpectCodes(codes, 0, T_, "prefill");
  }
}

TEST_P(CudaGoldenTest, BatchedDecodeMatchesAloneBitwise) {
  auto engine = Engine(*cuda_);
  auto alone_pool = Pool(*cuda_, 1);
  auto busy_pool = Pool(*cuda_, 3);
  const std::vector<int32_t> noise =
      testing::RandomTokens(T_, config_.n_vocab, 99);
  const int alone_slot = 0;
  for (int t = 0; t < T_; ++t) {
    std::vector<float> alone, busy;
    ASSERT_TRUE(engine
                    ->DecodeStep(*alone_pool, {&alone_slot, 1},
                                 {&golden_.tokens[t], 1}, &alone)
                    .ok());
    const int slots[3] = {2, 1, 0};
    const int32_t tokens[3] = {noise[t], golden_.tokens[t], noise[T_ - 1 - t]};
    const int batch = t % 3 == 0 ? 2 : 3;  // ragged batches
    ASSERT_TRUE(engine
                    ->DecodeStep(*busy_pool,
                                 {slots, static_cast<size_t>(batch)},
                                 {tokens, static_cast<size_t>(batch)}, &busy)
                    .ok());
    ASSERT_EQ(0, std::memcmp(alone.data(), busy.data() + config_.n_vocab,
                             sizeof(float) * config_.n_vocab))
        << "step " << t;
    ExpectRows(alone, t, 1, "alone");
  }
}

TEST_P(CudaGoldenTest, StatesMoveBetweenCpuAndGpu) {
  // Prefill half on the GPU, continue on the CPU from the exported state,
  // and the other way round; both must stay on the golden path.
  const int half = T_ / 2;
  auto cuda_engine = Engine(*cuda_);
  auto cpu_engine = Engine(cpu_);
  for (const bool gpu_first : {true, false}) {
    SCOPED_TRACE(gpu_first ? "gpu then cpu" : "cpu then gpu");
    TransformerVq& first_engine = gpu_first ? *cuda_engine : *cpu_engine;
    TransformerVq& second_engine = gpu_first ? *cpu_engine : *cuda_engine;
    auto first_pool = Pool(first_engine.backend());
    auto second_pool = Pool(second_engine.backend());
    std::vector<float> logprobs;
    ASSERT_TRUE(first_engine
                    .Prefill(*first_pool, 0,
                             {golden_.tokens.data(), static_cast<size_t>(half)},
                             LogprobRows::kNone, nullptr)
                    .ok());
    absl::StatusOr<std::string> exported = first_pool->Export(0);
    ASSERT_TRUE(exported.ok()) << exported.status();
    ASSERT_TRUE(second_pool->Import(0, *exported).ok());
    ASSERT_EQ(second_pool->position(0), half);
    ASSERT_TRUE(second_engine
                    .Prefill(*second_pool, 0,
                             {golden_.tokens.data() + half,
                              static_cast<size_t>(T_ - half)},
                             LogprobRows::kAll, &logprobs)
                    .ok());
    ExpectRows(logprobs, half, T_ - half, "continued on the other backend");
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, CudaGoldenTest,
                         ::testing::ValuesIn(testing::GoldenNames()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

TEST(CudaEngine, RandomModelMatchesCpuOverLongPrefillAndDecode) {
  // A model with several heads and S not a power of two, over a prompt many
  // blocks long (evictions, aggregated cache) and 40 decode steps.
  absl::StatusOr<std::unique_ptr<CudaBackend>> cuda = CudaBackend::Create(0);
  if (!cuda.ok()) GTEST_SKIP() << "no CUDA device: " << cuda.status().message();
  ModelConfig config = testing::SmallConfig(64, 16, 48, 3, 23, 2, 16, 24);
  config.agg_cache = true;
  const auto weights = testing::RandomModel(config, 31);
  CpuBackend cpu(2);
  Backend* backends[2] = {&cpu, cuda->get()};
  const std::vector<int32_t> prompt =
      testing::RandomTokens(300, config.n_vocab, 8);
  std::vector<float> results[2];
  CodeTrace prefill_codes[2];
  for (int which = 0; which < 2; ++which) {
    auto engine = TransformerVq::Create(*weights, *backends[which]).value();
    auto pool = StatePool::Create(config, *backends[which], 2).value();
    std::vector<float> logprobs;
    ASSERT_TRUE(engine
                    ->Prefill(*pool, 1, prompt, LogprobRows::kAll,
                              &results[which], &prefill_codes[which])
                    .ok());
    int32_t token = prompt.back();
    const int slot = 1;
    for (int step = 0; step < 40; ++step) {
      ASSERT_TRUE(
          engine->DecodeStep(*pool, {&slot, 1}, {&token, 1}, &logprobs).ok());
      results[which].insert(results[which].end(), logprobs.begin(),
                            logprobs.end());
      token = 3 + (step * 37) % (config.n_vocab - 3);
    }
  }
  // Random models have no guaranteed VQ margins: if a float32 near-tie
  // flipped a code the paths legitimately diverge, so say so explicitly.
  ASSERT_EQ(prefill_codes[1], prefill_codes[0])
      << "a VQ code differs between CPU and CUDA (check whether it is a "
         "near-tie)";
  ASSERT_EQ(results[1].size(), results[0].size());
  double worst = 0;
  for (size_t i = 0; i < results[0].size(); ++i) {
    worst = std::max(
        worst, std::abs(static_cast<double>(results[1][i]) - results[0][i]));
  }
  EXPECT_LE(worst, 1e-4) << "worst logprob difference CPU vs CUDA";
}

}  // namespace
}  // namespace tvq::runtime
