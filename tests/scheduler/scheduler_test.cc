// The scheduler loop with the real CPU runtime on the tiny-byte golden model:
// chunked prefill interleaved with decode, Score exactness through chunks,
// queue limits, cancellation, drain and stop.
#include "server/scheduler/scheduler.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "tests/scheduler/recording_sinks.h"
#include "tests/support/test_util.h"

namespace tvq::scheduler {
namespace {

// Records which phases ran, in order, with the token count of each call.
class PhaseRecorder final : public SchedulerObserver {
 public:
  void OnStep(StepPhase phase, int /*batch_size*/, int num_tokens,
              double /*seconds*/) override {
    absl::MutexLock lock(&mutex_);
    steps_.push_back({phase, num_tokens});
  }
  std::vector<std::pair<StepPhase, int>> steps() const {
    absl::MutexLock lock(&mutex_);
    return steps_;
  }

 private:
  mutable absl::Mutex mutex_;
  std::vector<std::pair<StepPhase, int>> steps_ ABSL_GUARDED_BY(mutex_);
};

class SchedulerTest : public ::testing::Test {
 protected:
  void Build(int num_slots, const SchedulerOptions& options,
             SchedulerObserver* observer = nullptr) {
    golden_ = testing::LoadGolden("tiny-byte");
    core::EngineConfig config;
    config.model_dir = golden_.model_dir;
    config.device = "cpu";
    config.threads = 1;
    config.num_slots = num_slots;
    config.prefill_chunk = options.batch.prefill_chunk;
    auto runtime = core::LoadModelRuntime(config);
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    auto scheduler = Scheduler::Create(*runtime_.transformer, *runtime_.pool,
                                       runtime_.tokenizer(), options, observer);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = *std::move(scheduler);
  }
  void TearDown() override {
    scheduler_.reset();  // stops the loop before the engine goes
  }

  int n_vocab() const { return runtime_.config().n_vocab; }

  static GenerationRequest Request(std::vector<int32_t> prompt,
                                   int max_new_tokens, uint64_t seed = 1) {
    GenerationRequest request;
    request.request_id = "test";
    request.prompt = std::move(prompt);
    request.max_new_tokens = max_new_tokens;
    request.ignore_eos = true;
    request.sampling.seed = seed;
    return request;
  }

  testing::GoldenCase golden_;
  PhaseRecorder recorder_;  // outlives the scheduler
  core::ModelRuntime runtime_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, ScoreThroughBlockSizedChunksMatchesTheGolden) {
  SchedulerOptions options;
  options.batch = {.step_token_budget = 16, .prefill_chunk = 8};
  Build(2, options);
  auto sink = std::make_shared<RecordingScoreSink>();
  ScoreRequest request;
  request.tokens = golden_.tokens;
  request.top_logprobs = 2;
  ASSERT_TRUE(scheduler_->SubmitScore(request, sink).ok());
  ASSERT_TRUE(sink->Wait());
  ASSERT_TRUE(sink->failure().ok()) << sink->failure();
  const int T = static_cast<int>(golden_.tokens.size());
  ASSERT_EQ(sink->result().token_logprobs.size(), static_cast<size_t>(T - 1));
  for (int t = 0; t + 1 < T; ++t) {
    const TokenLogprob& entry = sink->result().token_logprobs[t];
    EXPECT_EQ(entry.token_id, golden_.tokens[t + 1]);
    EXPECT_NEAR(entry.logprob,
                golden_.logprobs[static_cast<size_t>(t) * n_vocab() +
                                 golden_.tokens[t + 1]],
                2e-5)
        << "position " << t;
    ASSERT_EQ(entry.top_alternatives.size(), 2u);
  }
  EXPECT_EQ(sink->result().usage.prompt_tokens, T);
}

TEST_F(SchedulerTest, LongPromptPrefillInterleavesWithRunningDecodes) {
  SchedulerOptions options;
  options.batch = {.step_token_budget = 24, .prefill_chunk = 16};
  Build(4, options, &recorder_);
  auto running = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->SubmitGeneration(Request({1, 40, 41}, 3000), running).ok());
  while (running->num_tokens() < 5) absl::SleepFor(absl::Microseconds(50));

  std::vector<int32_t> long_prompt(1600, 50);
  long_prompt[0] = 1;
  auto late = std::make_shared<RecordingSink>();
  ASSERT_TRUE(scheduler_->SubmitGeneration(Request(long_prompt, 1), late).ok());
  ASSERT_TRUE(late->Wait());
  ASSERT_TRUE(late->failure().ok()) << late->failure();
  ASSERT_TRUE(running->Wait());
  ASSERT_TRUE(running->failure().ok());
  EXPECT_EQ(running->num_tokens(), 3000u);

  // 1600 tokens in 16-token chunks = 100 prefill calls of 16 tokens, each
  // step also decoding the running stream: no prefill call exceeds the
  // chunk, and decode steps run between consecutive long-prompt chunks.
  int prefill_16 = 0;
  int decodes_between = 0;
  bool in_long_prefill = false;
  for (const auto& [phase, tokens] : recorder_.steps()) {
    if (phase == StepPhase::kPrefill) {
      EXPECT_LE(tokens, 16);
      if (tokens == 16) {
        ++prefill_16;
        in_long_prefill = true;
      }
    } else if (in_long_prefill) {
      ++decodes_between;
    }
  }
  EXPECT_EQ(prefill_16, 100);
  EXPECT_GE(decodes_between, 99);
}

TEST_F(SchedulerTest, QueueCapacityIsFreeSlotsPlusMaxQueue) {
  SchedulerOptions options;
  options.max_queue = 1;
  Build(1, options);
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  auto third = std::make_shared<RecordingSink>();
  auto a = scheduler_->SubmitGeneration(Request({1, 5}, 1000000), first);
  auto b = scheduler_->SubmitGeneration(Request({1, 6}, 1000000), second);
  auto c = scheduler_->SubmitGeneration(Request({1, 7}, 10), third);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  while (scheduler_->Stats().busy_slots != 1)
    absl::SleepFor(absl::Microseconds(50));
  SchedulerStats stats = scheduler_->Stats();
  EXPECT_EQ(stats.queued_requests, 1);
  EXPECT_EQ(stats.free_slots, 0);

  // Cancel the queued one, then the running one.
  scheduler_->Cancel(*b);
  ASSERT_TRUE(second->Wait());
  EXPECT_EQ(second->failure().code(), absl::StatusCode::kCancelled);
  scheduler_->Cancel(*a);
  ASSERT_TRUE(first->Wait());
  EXPECT_EQ(first->failure().code(), absl::StatusCode::kCancelled);
  EXPECT_GT(first->num_tokens(), 0u);
  while (scheduler_->Stats().busy_slots != 0)
    absl::SleepFor(absl::Microseconds(50));
  stats = scheduler_->Stats();
  EXPECT_EQ(stats.free_slots, 1);
  EXPECT_EQ(stats.queued_requests, 0);
  scheduler_->Cancel(*a);  // ended: a no-op
}

TEST_F(SchedulerTest, BadRequestsAreRefusedAloneAndOthersRun) {
  Build(2, {});
  auto good = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->SubmitGeneration(Request({1, 10, 11}, 50), good).ok());
  auto bad = std::make_shared<RecordingSink>();
  EXPECT_EQ(
      scheduler_->SubmitGeneration(Request({1, 9999}, 5), bad).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->SubmitGeneration(Request({}, 5), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      scheduler_->SubmitGeneration(Request({1, 5}, 0), bad).status().code(),
      absl::StatusCode::kInvalidArgument);
  auto score = std::make_shared<RecordingScoreSink>();
  ScoreRequest short_score;
  short_score.tokens = {1};
  EXPECT_EQ(scheduler_->SubmitScore(short_score, score).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(good->Wait());
  EXPECT_TRUE(good->failure().ok());
  EXPECT_EQ(good->num_tokens(), 50u);
  EXPECT_EQ(good->completion().finish_reason, FinishReason::kLength);
}

TEST_F(SchedulerTest, DeadlineInThePastFailsWithDeadlineExceeded) {
  Build(1, {});
  auto sink = std::make_shared<RecordingSink>();
  GenerationRequest request = Request({1, 5}, 1000000);
  request.deadline = absl::Now() + absl::Milliseconds(50);
  ASSERT_TRUE(scheduler_->SubmitGeneration(request, sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->failure().code(), absl::StatusCode::kDeadlineExceeded);
  while (scheduler_->Stats().busy_slots != 0)
    absl::SleepFor(absl::Microseconds(50));
}

TEST_F(SchedulerTest, DrainLetsRequestsFinishThenRefusesNewOnes) {
  Build(2, {});
  auto running = std::make_shared<RecordingSink>();
  auto queued = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->SubmitGeneration(Request({1, 5}, 2000), running).ok());
  ASSERT_TRUE(scheduler_->SubmitGeneration(Request({1, 6}, 20), queued).ok());
  EXPECT_EQ(scheduler_->Drain(absl::Seconds(60)), 0);
  ASSERT_TRUE(running->Wait(absl::ZeroDuration()));
  ASSERT_TRUE(queued->Wait(absl::ZeroDuration()));
  EXPECT_EQ(running->num_tokens(), 2000u);
  EXPECT_EQ(queued->num_tokens(), 20u);
  auto late = std::make_shared<RecordingSink>();
  EXPECT_EQ(
      scheduler_->SubmitGeneration(Request({1, 7}, 5), late).status().code(),
      absl::StatusCode::kUnavailable);
  EXPECT_TRUE(scheduler_->Stats().draining);
}

TEST_F(SchedulerTest, DrainTimeoutEndsGenerationsAsCancelledWithTheirText) {
  Build(1, {});
  auto running = std::make_shared<RecordingSink>();
  auto queued = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->SubmitGeneration(Request({1, 5}, 100000000), running).ok());
  ASSERT_TRUE(
      scheduler_->SubmitGeneration(Request({1, 6}, 100000000), queued).ok());
  while (running->num_tokens() < 3) absl::SleepFor(absl::Microseconds(50));
  EXPECT_EQ(scheduler_->Drain(absl::Milliseconds(50)), 2);
  ASSERT_TRUE(running->Wait(absl::ZeroDuration()));
  ASSERT_TRUE(queued->Wait(absl::ZeroDuration()));
  EXPECT_TRUE(running->failure().ok());
  EXPECT_EQ(running->completion().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(running->completion().usage.generated_tokens,
            static_cast<int>(running->num_tokens()));
  EXPECT_EQ(queued->completion().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(queued->num_tokens(), 0u);
}

TEST_F(SchedulerTest, StopFailsWhatIsLeftWithUnavailable) {
  Build(1, {});
  auto running = std::make_shared<RecordingSink>();
  ASSERT_TRUE(
      scheduler_->SubmitGeneration(Request({1, 5}, 100000000), running).ok());
  while (running->num_tokens() < 1) absl::SleepFor(absl::Microseconds(50));
  scheduler_->Stop();
  ASSERT_TRUE(running->Wait(absl::ZeroDuration()));
  EXPECT_EQ(running->failure().code(), absl::StatusCode::kUnavailable);
  scheduler_->Stop();  // idempotent
}

}  // namespace
}  // namespace tvq::scheduler
