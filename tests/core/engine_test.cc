// core::Engine and core::LoadModelRuntime on the golden models with the
// real CPU backend: what they load, what Info() reports, scoring through the
// engine's scheduler with its bits per byte, drain, and load errors that
// name the file or the flag.
#include "server/core/engine.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/engine/state_pool.h"
#include "server/text/byte_tokenizer.h"
#include "tests/support/sanitizers.h"
#include "tests/support/test_util.h"

namespace tvq::core {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string GoldenModelDir(const std::string& name) {
  return std::string(TVQ_TEST_DATA_DIR) + "/golden/" + name + "/model";
}

EngineConfig CpuConfig(const std::string& model_dir) {
  EngineConfig config;
  config.model_dir = model_dir;
  config.device = "cpu";
  config.threads = 1;
  config.num_slots = 2;
  config.max_queue = 7;
  return config;
}

// Waits for one score.
class ScoreWaiter final : public scheduler::ScoreSink {
 public:
  void OnScored(scheduler::ScoreResult result) override {
    result_ = std::move(result);
    done_.Notify();
  }
  void OnFailed(const absl::Status& status) override {
    status_ = status;
    done_.Notify();
  }
  bool Wait() {
    return done_.WaitForNotificationWithTimeout(absl::Seconds(60));
  }
  const scheduler::ScoreResult& result() const { return result_; }
  const absl::Status& status() const { return status_; }

 private:
  absl::Notification done_;
  scheduler::ScoreResult result_;
  absl::Status status_;
};

TEST(EngineTest, CreatesTheWholeEngineAndReportsIt) {
  const EngineConfig config = CpuConfig(GoldenModelDir("tiny-byte"));
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, nullptr);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const ModelInfo info = (*engine)->Info();
  EXPECT_EQ(info.path, config.model_dir);
  EXPECT_EQ(info.name, "model");
  EXPECT_EQ(info.config.n_vocab, 259);
  EXPECT_EQ(info.config.block_len, 8);
  EXPECT_EQ(info.weights_dtype, "F32");
  EXPECT_GT(info.num_parameters, 0);
  EXPECT_EQ(info.tokenizer_kind, runtime::TokenizerKind::kByte);
  EXPECT_EQ(info.vocab_size, runtime::kByteVocabSize);
  EXPECT_EQ(
      info.state_bytes_per_sequence,
      static_cast<int64_t>(runtime::StatePool::BytesPerSlotFor(info.config)));
  EXPECT_EQ(info.backend, "cpu");
  EXPECT_FALSE(info.device.empty());
  EXPECT_EQ(info.device, (*engine)->device_name());
  EXPECT_EQ(info.slots.num_slots, 2);
  EXPECT_EQ(info.slots.free_slots, 2);
  EXPECT_EQ(info.slots.busy_slots, 0);
  EXPECT_EQ(info.slots.queued_requests, 0);
  EXPECT_EQ(info.max_queue, 7);
  EXPECT_EQ(info.limits.max_new_tokens_limit,
            config.limits.max_new_tokens_limit);
  EXPECT_EQ((*engine)->num_slots(), 2);
  EXPECT_EQ((*engine)->runtime().prefill_chunk, 256);
}

TEST(EngineTest, SentencePieceModelReportsItsTokenizer) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(CpuConfig(GoldenModelDir("tiny-tied")), nullptr);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const ModelInfo info = (*engine)->Info();
  EXPECT_EQ(info.tokenizer_kind, runtime::TokenizerKind::kSentencePiece);
  EXPECT_EQ(std::string(TokenizerKindName(info.tokenizer_kind)),
            "sentencepiece");
  EXPECT_EQ(info.vocab_size, (*engine)->tokenizer().vocab_size());
  EXPECT_LE(info.vocab_size, info.config.n_vocab);
}

TEST(EngineTest, ScoresTheGoldenSequenceWithBitsPerByte) {
  const testing::GoldenCase golden = testing::LoadGolden("tiny-byte");
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(CpuConfig(golden.model_dir), nullptr);
  ASSERT_TRUE(engine.ok()) << engine.status();
  scheduler::ScoreRequest request;
  request.request_id = "score";
  request.tokens = golden.tokens;
  auto waiter = std::make_shared<ScoreWaiter>();
  ASSERT_TRUE((*engine)->scheduler().SubmitScore(request, waiter).ok());
  ASSERT_TRUE(waiter->Wait());
  ASSERT_TRUE(waiter->status().ok()) << waiter->status();
  const scheduler::ScoreResult& result = waiter->result();
  ASSERT_EQ(result.token_logprobs.size(), golden.tokens.size() - 1);

  int64_t bytes = 0;
  double golden_total = 0;
  const int n_vocab = (*engine)->model_config().n_vocab;
  for (size_t t = 0; t + 1 < golden.tokens.size(); ++t) {
    const int32_t next = golden.tokens[t + 1];
    if (next > 2) ++bytes;
    golden_total += golden.logprobs[t * n_vocab + next];
  }
  EXPECT_NEAR(result.total_logprob, golden_total, 1e-3);
  const ScoreSummary summary = (*engine)->Summarize(result);
  EXPECT_EQ(summary.scored_bytes, bytes);
  ASSERT_TRUE(summary.bits_per_byte.has_value());
  EXPECT_DOUBLE_EQ(
      *summary.bits_per_byte,
      -result.total_logprob / std::log(2.0) / static_cast<double>(bytes));
}

TEST(EngineTest, DrainRefusesNewWork) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(CpuConfig(GoldenModelDir("tiny-byte")), nullptr);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->Drain(absl::Seconds(5)).cut_short, 0);
  scheduler::ScoreRequest request;
  request.tokens = {1, 5, 6};
  absl::StatusOr<scheduler::RequestHandle> handle =
      (*engine)->scheduler().SubmitScore(request,
                                         std::make_shared<ScoreWaiter>());
  EXPECT_EQ(handle.status().code(), absl::StatusCode::kUnavailable);
  (*engine)->Stop();
  (*engine)->Stop();  // idempotent
}

TEST(EngineTest, SlotsAreDerivedFromTheStateMemory) {
  EngineConfig config = CpuConfig(GoldenModelDir("tiny-byte"));
  absl::StatusOr<runtime::ModelConfig> model =
      runtime::ModelWeights::LoadConfig(config.model_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t bytes =
      static_cast<int64_t>(runtime::StatePool::BytesPerSlotFor(*model));
  config.num_slots = 0;
  config.state_memory_bytes = 3 * bytes + bytes / 2;
  absl::StatusOr<ModelRuntime> runtime = LoadModelRuntime(config);
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  EXPECT_EQ(runtime->pool->num_slots(), 3);

  config.state_memory_bytes = int64_t{1} << 40;
  EXPECT_EQ(*SlotCountFor(config, bytes), kMaxDerivedSlots);

  config.state_memory_bytes = bytes - 1;
  absl::StatusOr<int> none = SlotCountFor(config, bytes);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("--state-memory-bytes"));
  EXPECT_EQ(LoadModelRuntime(config).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EngineTest, PrefillChunksAreWholeBlocks) {
  runtime::ModelConfig model;
  model.block_len = 8;
  EngineConfig config;
  config.prefill_chunk = 20;
  EXPECT_EQ(PrefillChunkFor(config, model), 16);
  config.prefill_chunk = 3;
  EXPECT_EQ(PrefillChunkFor(config, model), 8);
  config.block_len = 4;
  config.prefill_chunk = 10;
  EXPECT_EQ(PrefillChunkFor(config, model), 8);
}

TEST(EngineTest, MissingModelDirectoryNamesTheConfigFile) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(CpuConfig("/nonexistent/tvq-model"), nullptr);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(engine.status().message()),
              HasSubstr("/nonexistent/tvq-model/config.json"));
}

TEST(EngineTest, MissingWeightsNameTheSafetensorsFile) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / "tvq-core-engine-test-no-weights";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(fs::path(GoldenModelDir("tiny-byte")) / "config.json",
                dir / "config.json");
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(CpuConfig(dir.string()), nullptr);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(engine.status().message()),
              HasSubstr("model.safetensors"));
  fs::remove_all(dir);
}

TEST(EngineTest, UnknownDeviceIsAnError) {
  EngineConfig config = CpuConfig(GoldenModelDir("tiny-byte"));
  config.device = "abacus";
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, nullptr);
  ASSERT_FALSE(engine.ok());
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr("abacus"));
}

TEST(ModelRuntimeTest, BuildsFromAnInMemoryModel) {
  const runtime::ModelConfig model =
      testing::SmallConfig(32, 8, 16, 2, 8, 1, 4, 4);
  runtime::LoadedModel loaded;
  loaded.weights = testing::RandomModel(model, 7);
  loaded.tokenizer = std::make_unique<runtime::ByteTokenizer>();
  EngineConfig config;
  config.device = "cpu";
  config.threads = 1;
  config.num_slots = 3;
  absl::StatusOr<ModelRuntime> runtime =
      BuildModelRuntime(std::move(loaded), config);
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  EXPECT_EQ(runtime->pool->num_slots(), 3);
  EXPECT_EQ(std::string(runtime->backend_name()), "cpu");
  EXPECT_EQ(runtime->prefill_chunk, 256);
  EXPECT_EQ(BuildModelRuntime(runtime::LoadedModel{}, config).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ModelInfoTest, NameIsTheDirectoryBaseName) {
  EXPECT_EQ(ModelName("models/demo"), "demo");
  EXPECT_EQ(ModelName("models/demo///"), "demo");
  EXPECT_EQ(ModelName("demo"), "demo");
  EXPECT_EQ(ModelName("/"), "");
  EXPECT_EQ(std::string(TokenizerKindName(runtime::TokenizerKind::kByte)),
            "byte");
}

}  // namespace
}  // namespace tvq::core
