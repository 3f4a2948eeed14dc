// bf16 weights and state (--weights-dtype=bf16, --state-dtype=bf16) against
// float32, on the golden models and the demo model.
//
// Tolerance for logprobs, derived from bf16's precision. bf16 keeps 8
// significant bits, so one rounding has relative error u <= 2^-8 ~ 3.9e-3.
// A logit z is a dot product of rounded weights with activations that carry
// the roundings of every earlier matrix and of the stored state; each
// rounded factor perturbs it by about u * |z|, and the r independent
// roundings on its path (3 matrices per sublayer, the window values and
// means, the output head: r = 3 * sublayers + 2) add like a random walk:
// |dz| ~ u * sqrt(r) * |z|. A log-softmax moves by at most twice the largest
// logit error, and |z - mean z| is at most half a row's logprob spread, so
//   tolerance = 2 * u * sqrt(r) * (max over rows of the half spread),
// computed from each golden model's own logprobs (0.11–0.13 on the golden models, where the measured worst is
// 0.02); the test
// prints it next to the measured worst error.
//
// Codes: VQ distances are float32, but with bf16 weights the keys carry
// errors of ~u * sqrt(r) relative (~1e-2), larger than the golden keys'
// smallest decision margins (> 1e-3 relative, golden/README.md): a code may
// flip where two codewords are that close, and once it flips the states
// differ. So logprobs are compared up to the first token whose codes
// differ from the golden ones, and flips must stay rare (kMaxFlippedCodes of
// the codes). bf16 state alone (float32 keys) must flip no code at all.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "tests/support/sanitizers.h"
#include "tests/support/test_util.h"

namespace tvq::runtime {
namespace {

constexpr double kBf16UnitRoundoff = 0x1p-8;
constexpr double kMaxFlippedCodes = 0.02;

// 2 u sqrt(r) max|z - mean z| (see the top of the file).
double Bf16Tolerance(const testing::GoldenCase& golden, int n_vocab,
                     int num_sublayers) {
  double half_spread = 0;
  for (size_t row = 0; row * n_vocab < golden.logprobs.size(); ++row) {
    const auto begin = golden.logprobs.begin() + row * n_vocab;
    const auto [low, high] = std::minmax_element(begin, begin + n_vocab);
    half_spread = std::max(half_spread, 0.5 * (*high - *low));
  }
  return 2 * kBf16UnitRoundoff * std::sqrt(3.0 * num_sublayers + 2) * half_spread;
}

core::ModelRuntime LoadRuntime(const std::string& model_dir, DType weights,
                               DType state, int slots) {
  core::EngineConfig config;
  config.model_dir = model_dir;
  config.device = "cpu";
  config.threads = 2;
  config.num_slots = slots;
  config.weights_dtype = weights;
  config.state_dtype = state;
  auto runtime = core::LoadModelRuntime(config);
  EXPECT_TRUE(runtime.ok()) << runtime.status();
  return std::move(runtime).value();
}

class Bf16GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "tiny-tied") TVQ_SKIP_WITHOUT_SENTENCEPIECE();
    golden_ = testing::LoadGolden(GetParam());
  }
  testing::GoldenCase golden_;
};

TEST_P(Bf16GoldenTest, LogprobsWithinBf16ToleranceUntilACodeFlips) {
  for (const auto& [weights, state, name] :
       {std::tuple{DType::kBF16, DType::kF32, "bf16 weights"},
        std::tuple{DType::kF32, DType::kBF16, "bf16 state"},
        std::tuple{DType::kBF16, DType::kBF16, "bf16 weights and state"}}) {
    SCOPED_TRACE(name);
    core::ModelRuntime runtime = LoadRuntime(golden_.model_dir, weights, state, 1);
    const ModelConfig& config = runtime.config();
    const int T = static_cast<int>(golden_.tokens.size());
    const int V = config.n_vocab, H = config.n_head;
    const double tolerance = Bf16Tolerance(golden_, V, config.num_sublayers());
    // Prefill (block kernels) and token by token from an empty state
    // (decode kernels), each with its codes.
    std::vector<float> prefill;
    CodeTrace prefill_codes;
    ASSERT_TRUE(runtime.transformer
                    ->Prefill(*runtime.pool, 0, golden_.tokens, LogprobRows::kAll,
                              &prefill, &prefill_codes)
                    .ok());
    ASSERT_TRUE(runtime.pool->Reset(0).ok());
    std::vector<float> decode;
    CodeTrace decode_codes(config.num_sublayers());
    for (int t = 0; t < T; ++t) {
      std::vector<float> row;
      CodeTrace step_codes;
      const int slot = 0;
      ASSERT_TRUE(runtime.transformer
                      ->DecodeStep(*runtime.pool, {&slot, 1},
                                   {&golden_.tokens[t], 1}, &row, &step_codes)
                      .ok());
      decode.insert(decode.end(), row.begin(), row.end());
      for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
        decode_codes[sublayer].insert(decode_codes[sublayer].end(),
                                      step_codes[sublayer].begin(),
                                      step_codes[sublayer].end());
      }
    }
    for (const auto& [path, logprobs, codes, head_major] :
         {std::tuple{"prefill", &prefill, &prefill_codes, true},
          std::tuple{"decode", &decode, &decode_codes, false}}) {
      // codes: prefill [sublayer][h * T + t], decode [sublayer][t * H + h].
      int first_flip = T, flips = 0;
      for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
        for (int h = 0; h < H; ++h) {
          for (int t = 0; t < T; ++t) {
            const int32_t got = (*codes)[sublayer][head_major ? h * T + t : t * H + h];
            if (got != golden_.codes[(static_cast<size_t>(sublayer) * H + h) * T + t]) {
              ++flips;
              first_flip = std::min(first_flip, t);
            }
          }
        }
      }
      double worst = 0;
      for (size_t i = 0; i < static_cast<size_t>(first_flip) * V; ++i) {
        const double error =
            std::abs(static_cast<double>((*logprobs)[i]) - golden_.logprobs[i]);
        if (!(error <= worst)) worst = error;  // NaN becomes the worst
      }
      std::printf("%s, %s, %s: worst |logprob - golden| %.3g over %d of %d rows "
                  "(tolerance %.3g); %d of %d codes flipped\n",
                  GetParam().c_str(), name, path, worst, first_flip, T, tolerance,
                  flips, config.num_sublayers() * H * T);
      EXPECT_LE(worst, tolerance) << path;
      EXPECT_LE(flips, kMaxFlippedCodes * config.num_sublayers() * H * T) << path;
      if (weights == DType::kF32) {
        EXPECT_EQ(flips, 0) << path;
      }
    }
  }
}

TEST_P(Bf16GoldenTest, BatchedDecodeMatchesAloneBitwise) {
  // As golden_test's F32 case: slot 1 decodes the golden sequence among
  // peers in ragged batches and must match, bit for bit, a run alone.
  core::ModelRuntime runtime =
      LoadRuntime(golden_.model_dir, DType::kBF16, DType::kBF16, 1);
  const ModelConfig& config = runtime.config();
  auto busy_pool = StatePool::Create(config, *runtime.backend, 3, DType::kBF16);
  ASSERT_TRUE(busy_pool.ok()) << busy_pool.status();
  const int T = static_cast<int>(golden_.tokens.size());
  const std::vector<int32_t> noise = testing::RandomTokens(T, config.n_vocab, 99);
  for (int t = 0; t < T; ++t) {
    std::vector<float> alone, busy;
    const int alone_slot = 0;
    ASSERT_TRUE(runtime.transformer
                    ->DecodeStep(*runtime.pool, {&alone_slot, 1},
                                 {&golden_.tokens[t], 1}, &alone)
                    .ok());
    const int slots[3] = {2, 1, 0};
    const int32_t tokens[3] = {noise[t], golden_.tokens[t], noise[T - 1 - t]};
    const size_t batch = t % 3 == 0 ? 2 : 3;
    ASSERT_TRUE(runtime.transformer
                    ->DecodeStep(**busy_pool, {slots, batch}, {tokens, batch}, &busy)
                    .ok());
    ASSERT_EQ(0, std::memcmp(alone.data(), busy.data() + config.n_vocab,
                             sizeof(float) * config.n_vocab))
        << "step " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, Bf16GoldenTest,
                         ::testing::ValuesIn(testing::GoldenNames()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) if (c == '-') c = '_';
                           return name;
                         });

// Greedy decoding of the demo model: 256 tokens with bf16 weights and state
// against float32. The sequences must be equal, or differ first at a step
// where float32's top two candidates are within kNearTie of each other (a
// near-tie bf16's error can flip); after a flip the contexts differ and the
// comparison ends.
TEST(Bf16Demo, GreedyTokensMatchFloat32Over256Steps) {
  constexpr int kSteps = 256;
  // A 256-step greedy run is an argmax over logprobs each within ~0.1 of
  // float32's (the golden tolerance above): a token can flip only where
  // float32's top two are closer than twice that.
  constexpr double kNearTie = 0.2;
  core::ModelRuntime f32 =
      LoadRuntime(TVQ_DEMO_MODEL_DIR, DType::kF32, DType::kF32, 1);
  core::ModelRuntime bf16 =
      LoadRuntime(TVQ_DEMO_MODEL_DIR, DType::kBF16, DType::kBF16, 1);
  const int V = f32.config().n_vocab;
  auto prompt = f32.tokenizer().Encode(
      "Q: What does a fortune cookie say about patience?\nA:");
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  std::vector<float> f32_logprobs, bf16_logprobs;
  ASSERT_TRUE(f32.transformer->Prefill(*f32.pool, 0, *prompt, LogprobRows::kLast,
                                       &f32_logprobs).ok());
  ASSERT_TRUE(bf16.transformer->Prefill(*bf16.pool, 0, *prompt,
                                        LogprobRows::kLast, &bf16_logprobs).ok());
  auto argmax = [&](const std::vector<float>& row) {
    return static_cast<int32_t>(std::max_element(row.begin(), row.begin() + V) -
                                row.begin());
  };
  int equal_steps = 0;
  for (int step = 0; step < kSteps; ++step) {
    const int32_t f32_token = argmax(f32_logprobs);
    const int32_t bf16_token = argmax(bf16_logprobs);
    if (f32_token != bf16_token) {
      const double gap = f32_logprobs[f32_token] - f32_logprobs[bf16_token];
      std::printf("greedy tokens differ first at step %d: float32 gap %.3g\n",
                  step, gap);
      EXPECT_LE(gap, kNearTie) << "step " << step
                               << ": bf16 flipped a token that was no near-tie";
      break;
    }
    ++equal_steps;
    const int slot = 0;
    ASSERT_TRUE(f32.transformer->DecodeStep(*f32.pool, {&slot, 1},
                                            {&f32_token, 1}, &f32_logprobs).ok());
    ASSERT_TRUE(bf16.transformer->DecodeStep(*bf16.pool, {&slot, 1},
                                             {&bf16_token, 1}, &bf16_logprobs).ok());
  }
  std::printf("greedy: %d of %d steps equal\n", equal_steps, kSteps);
}

TEST(Bf16State, BytesPerSlotHalvesMeansAndWindowValues) {
  core::ModelRuntime f32 =
      LoadRuntime(TVQ_DEMO_MODEL_DIR, DType::kF32, DType::kF32, 1);
  core::ModelRuntime bf16 =
      LoadRuntime(TVQ_DEMO_MODEL_DIR, DType::kF32, DType::kBF16, 1);
  const ModelConfig& c = f32.config();
  const size_t H = c.n_head, S = c.n_code, M = c.mem_len, dv = c.d_v,
               L = c.num_sublayers();
  EXPECT_EQ(f32.pool->BytesPerSlot(),
            8 + L * H * (4 * S + 4 * S * dv + 4 * M + 4 * M * dv));
  EXPECT_EQ(bf16.pool->BytesPerSlot(),
            8 + L * H * (4 * S + 2 * S * dv + 4 * M + 2 * M * dv));
  EXPECT_EQ(bf16.pool->BytesPerSlot(),
            StatePool::BytesPerSlotFor(c, DType::kBF16));
  EXPECT_EQ(bf16.state_bytes_per_sequence(),
            static_cast<int64_t>(bf16.pool->BytesPerSlot()));
  // Counts and codes are ~0.4% of the demo model's state: the whole is halved.
  EXPECT_LT(bf16.pool->BytesPerSlot(), 0.51 * f32.pool->BytesPerSlot());
}

TEST(Bf16State, ExportImportRoundTripsAndRefusesTheOtherDtype) {
  core::ModelRuntime bf16 =
      LoadRuntime(TVQ_DEMO_MODEL_DIR, DType::kBF16, DType::kBF16, 2);
  core::ModelRuntime f32 =
      LoadRuntime(TVQ_DEMO_MODEL_DIR, DType::kF32, DType::kF32, 1);
  const std::vector<int32_t> tokens =
      testing::RandomTokens(300, bf16.config().n_vocab, 7);
  std::vector<float> logprobs;
  ASSERT_TRUE(bf16.transformer->Prefill(*bf16.pool, 0, tokens,
                                        LogprobRows::kNone, &logprobs).ok());
  auto exported = bf16.pool->Export(0);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(exported->size(), bf16.pool->ExportBytes());
  ASSERT_TRUE(bf16.pool->Import(1, *exported).ok());
  // The imported slot continues exactly as the original.
  std::vector<float> original, imported;
  const int32_t next = 42;
  const int zero = 0, one = 1;
  ASSERT_TRUE(bf16.transformer->DecodeStep(*bf16.pool, {&zero, 1}, {&next, 1},
                                           &original).ok());
  ASSERT_TRUE(bf16.transformer->DecodeStep(*bf16.pool, {&one, 1}, {&next, 1},
                                           &imported).ok());
  EXPECT_EQ(0, std::memcmp(original.data(), imported.data(),
                           sizeof(float) * original.size()));
  const absl::Status refused = f32.pool->Import(0, *exported);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("BF16 state"), std::string::npos) << refused;
}

}  // namespace
}  // namespace tvq::runtime
