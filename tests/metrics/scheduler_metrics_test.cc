// The scheduler observer with the real scheduler and CPU engine on the
// tiny-byte golden model: after known requests, every counter and histogram
// count moved by exactly the expected amount.
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "server/metrics/scheduler_metrics_observer.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/scheduler/scheduler.h"
#include "tests/metrics/prometheus_text.h"

namespace tvq::metrics {
namespace {

using scheduler::Completion;
using scheduler::GenerationRequest;
using scheduler::TokenUpdate;
using testing::Scrape;

// Counts how requests end.
class Outcomes {
 public:
  void Finished(int tokens, scheduler::FinishReason reason) {
    absl::MutexLock lock(&mutex_);
    ++ended_;
    tokens_ += tokens;
    reasons_.push_back(reason);
  }
  void Failed(absl::StatusCode code) {
    absl::MutexLock lock(&mutex_);
    ++ended_;
    failures_.push_back(code);
  }
  // Waits until `count` requests ended (at most 30 s).
  bool WaitFor(int count) {
    absl::MutexLock lock(&mutex_);
    auto done = [this, count]() ABSL_SHARED_LOCKS_REQUIRED(mutex_) {
      return ended_ >= count;
    };
    return mutex_.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(30));
  }
  int tokens() {
    absl::MutexLock lock(&mutex_);
    return tokens_;
  }
  std::vector<absl::StatusCode> failures() {
    absl::MutexLock lock(&mutex_);
    return failures_;
  }

 private:
  absl::Mutex mutex_;
  int ended_ ABSL_GUARDED_BY(mutex_) = 0;
  int tokens_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<scheduler::FinishReason> reasons_ ABSL_GUARDED_BY(mutex_);
  std::vector<absl::StatusCode> failures_ ABSL_GUARDED_BY(mutex_);
};

class CountingSink final : public scheduler::TokenSink {
 public:
  explicit CountingSink(Outcomes& outcomes) : outcomes_(outcomes) {}
  void OnTokens(TokenUpdate update) override {
    tokens_ += static_cast<int>(update.token_ids.size());
  }
  void OnFinished(TokenUpdate update, const Completion& completion) override {
    tokens_ += static_cast<int>(update.token_ids.size());
    outcomes_.Finished(tokens_, completion.finish_reason);
  }
  void OnFailed(const absl::Status& status) override {
    outcomes_.Failed(status.code());
  }

 private:
  Outcomes& outcomes_;
  int tokens_ = 0;  // scheduler thread only
};

class ScoreCounter final : public scheduler::ScoreSink {
 public:
  explicit ScoreCounter(Outcomes& outcomes) : outcomes_(outcomes) {}
  void OnScored(scheduler::ScoreResult /*result*/) override {
    outcomes_.Finished(0, scheduler::FinishReason::kUnspecified);
  }
  void OnFailed(const absl::Status& status) override {
    outcomes_.Failed(status.code());
  }

 private:
  Outcomes& outcomes_;
};

class SchedulerMetricsTest : public ::testing::Test {
 protected:
  // Loads the model and starts a scheduler with `num_slots` slots that
  // reports to the metrics.
  void Start(int num_slots, int max_queue) {
    const std::string directory =
        std::string(TVQ_TEST_DATA_DIR) + "/golden/tiny-byte/model";
    core::EngineConfig config;
    config.model_dir = directory;
    config.device = "cpu";
    config.threads = 1;
    config.num_slots = num_slots;
    auto runtime = core::LoadModelRuntime(config);
    ASSERT_TRUE(runtime.ok()) << runtime.status();
    runtime_ = *std::move(runtime);
    auto metrics = ServerMetrics::Create();
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = *std::move(metrics);
    observer_ = std::make_unique<SchedulerMetricsObserver>(*metrics_);
    scheduler::SchedulerOptions options;
    options.max_queue = max_queue;
    options.batch.prefill_chunk = 16;
    auto scheduler = scheduler::Scheduler::Create(
        *runtime_.transformer, *runtime_.pool, runtime_.tokenizer(), options,
        observer_.get());
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = *std::move(scheduler);
    metrics_->SetEngineSource([this] {
      const scheduler::SchedulerStats stats = scheduler_->Stats();
      EngineSnapshot snapshot;
      snapshot.num_slots = stats.num_slots;
      snapshot.busy_slots = stats.busy_slots;
      snapshot.pinned_slots = stats.pinned_slots;
      snapshot.queued_requests = stats.queued_requests;
      snapshot.state_bytes_per_sequence =
          static_cast<int64_t>(runtime_.pool->BytesPerSlot());
      return snapshot;
    });
  }

  void TearDown() override {
    if (metrics_ != nullptr) metrics_->SetEngineSource(nullptr);
    scheduler_.reset();
  }

  // Sinks hear of the end before the slot is released (end of the step):
  // waits until every slot is free again.
  bool WaitUntilIdle() const {
    const absl::Time limit = absl::Now() + absl::Seconds(10);
    while (absl::Now() < limit) {
      const scheduler::SchedulerStats stats = scheduler_->Stats();
      if (stats.busy_slots == 0 && stats.queued_requests == 0) return true;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return false;
  }

  Scrape Collect() const {
    absl::StatusOr<Scrape> scrape = Scrape::Parse(metrics_->SerializeText());
    EXPECT_TRUE(scrape.ok()) << scrape.status();
    return scrape.ok() ? *std::move(scrape) : Scrape();
  }

  static GenerationRequest Greedy(std::vector<int32_t> prompt,
                                  int max_new_tokens) {
    GenerationRequest request;
    request.prompt = std::move(prompt);
    request.sampling.temperature = 0;
    request.max_new_tokens = max_new_tokens;
    request.ignore_eos = true;
    return request;
  }

  core::ModelRuntime runtime_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<SchedulerMetricsObserver> observer_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  Outcomes outcomes_;
};

TEST_F(SchedulerMetricsTest, CountsGenerationsAndScoresExactly) {
  Start(/*num_slots=*/4, /*max_queue=*/16);
  // Six generations of 7 tokens (more than the slots: some wait), prompts of
  // 3..23 tokens (several prefill chunks of 16 for the longest).
  constexpr int kGenerations = 6;
  constexpr int kNewTokens = 7;
  std::vector<int> prompt_lengths;
  for (int i = 0; i < kGenerations; ++i) {
    const int length = 3 + 4 * i;
    prompt_lengths.push_back(length);
    std::vector<int32_t> prompt(length);
    for (int t = 0; t < length; ++t) prompt[t] = 3 + (7 * t + i) % 250;
    ASSERT_TRUE(
        scheduler_
            ->SubmitGeneration(Greedy(prompt, kNewTokens),
                               std::make_shared<CountingSink>(outcomes_))
            .ok());
  }
  // One generation ended by a stop token on its first token.
  GenerationRequest stopped = Greedy({1, 40, 41}, 100);
  for (int32_t id = 0; id < runtime_.config().n_vocab; ++id) {
    stopped.stop_token_ids.push_back(id);
  }
  ASSERT_TRUE(
      scheduler_
          ->SubmitGeneration(stopped, std::make_shared<CountingSink>(outcomes_))
          .ok());
  // One score of 9 tokens.
  scheduler::ScoreRequest score;
  score.tokens = {1, 10, 11, 12, 13, 14, 15, 16, 17};
  ASSERT_TRUE(
      scheduler_->SubmitScore(score, std::make_shared<ScoreCounter>(outcomes_))
          .ok());
  ASSERT_TRUE(outcomes_.WaitFor(kGenerations + 2));
  ASSERT_TRUE(outcomes_.failures().empty());
  ASSERT_EQ(outcomes_.tokens(), kGenerations * kNewTokens + 1);
  ASSERT_TRUE(WaitUntilIdle());

  const Scrape scrape = Collect();
  const double generated = kGenerations * kNewTokens + 1;
  const double prompt_tokens =
      std::accumulate(prompt_lengths.begin(), prompt_lengths.end(), 0) + 3;
  EXPECT_EQ(scrape.Value("tvq_generated_tokens_total"), generated);
  EXPECT_EQ(scrape.Value("tvq_prompt_tokens_total"), prompt_tokens + 9);
  EXPECT_EQ(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "generate"}, {"reason", "length"}}),
            kGenerations);
  EXPECT_EQ(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "generate"}, {"reason", "stop_token"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "score"}, {"reason", "complete"}}),
            1);
  EXPECT_EQ(scrape.Sum("tvq_requests_finished_total"), kGenerations + 2);
  // Every generation produced a first token; the later ones are inter-token
  // gaps, each from one sequence's slot in a batched decode step.
  EXPECT_EQ(scrape.Value("tvq_time_to_first_token_seconds_count"),
            kGenerations + 1);
  EXPECT_EQ(
      scrape.Value("tvq_time_to_first_token_seconds_bucket", {{"le", "+Inf"}}),
      kGenerations + 1);
  EXPECT_EQ(scrape.Value("tvq_inter_token_latency_seconds_count"),
            kGenerations * (kNewTokens - 1));
  EXPECT_EQ(scrape.Value("tvq_batch_size_sum"),
            kGenerations * (kNewTokens - 1));
  EXPECT_EQ(
      scrape.Value("tvq_step_duration_seconds_count", {{"phase", "decode"}}),
      scrape.Value("tvq_batch_size_count"));
  EXPECT_GE(
      scrape.Value("tvq_step_duration_seconds_count", {{"phase", "prefill"}}),
      kGenerations + 2);
  EXPECT_EQ(scrape.Value("tvq_decode_duration_seconds_count"),
            kGenerations + 1);
  EXPECT_EQ(scrape.Value("tvq_request_generated_tokens_count"),
            kGenerations + 1);
  EXPECT_EQ(scrape.Value("tvq_request_generated_tokens_sum"), generated);
  EXPECT_EQ(
      scrape.Value("tvq_request_prompt_tokens_sum", {{"kind", "generate"}}),
      prompt_tokens);
  EXPECT_EQ(scrape.Value("tvq_request_prompt_tokens_sum", {{"kind", "score"}}),
            9);
  for (const char* kind : {"generate", "score"}) {
    const double requests =
        kind == std::string("generate") ? kGenerations + 1 : 1;
    EXPECT_EQ(
        scrape.Value("tvq_request_duration_seconds_count", {{"kind", kind}}),
        requests);
    EXPECT_EQ(scrape.Value("tvq_queue_wait_seconds_count", {{"kind", kind}}),
              requests);
    EXPECT_EQ(
        scrape.Value("tvq_prefill_duration_seconds_count", {{"kind", kind}}),
        requests);
  }
  // Idle again: every slot free.
  EXPECT_EQ(scrape.Value("tvq_queue_length"), 0);
  EXPECT_EQ(scrape.Value("tvq_requests_running"), 0);
  EXPECT_EQ(scrape.Value("tvq_slots", {{"state", "free"}}), 4);
  EXPECT_EQ(scrape.Value("tvq_state_utilization_ratio"), 0);
  EXPECT_EQ(scrape.Value("tvq_state_memory_bytes", {{"state", "reserved"}}),
            4.0 * runtime_.pool->BytesPerSlot());
}

TEST_F(SchedulerMetricsTest, CountsCancelledDeadlineAndRejectedRequests) {
  Start(/*num_slots=*/1, /*max_queue=*/1);
  // Holds the only slot until cancelled.
  auto long_running = scheduler_->SubmitGeneration(
      Greedy({1, 50, 51}, 1000000), std::make_shared<CountingSink>(outcomes_));
  ASSERT_TRUE(long_running.ok());
  // Waits in the queue with a deadline that has passed: reaped.
  GenerationRequest expired = Greedy({1, 52}, 5);
  expired.deadline = absl::Now() - absl::Seconds(1);
  ASSERT_TRUE(
      scheduler_
          ->SubmitGeneration(expired, std::make_shared<CountingSink>(outcomes_))
          .ok());
  ASSERT_TRUE(outcomes_.WaitFor(1));
  // The slot is busy and the queue (1) may hold one more: submit until the
  // scheduler refuses, counting the refusals.
  int refused = 0;
  int queued = 0;
  for (int i = 0; i < 4; ++i) {
    auto handle = scheduler_->SubmitGeneration(
        Greedy({1, 53}, 2), std::make_shared<CountingSink>(outcomes_));
    if (handle.ok()) {
      ++queued;
    } else {
      EXPECT_EQ(handle.status().code(), absl::StatusCode::kResourceExhausted);
      ++refused;
    }
  }
  EXPECT_EQ(queued, 1);
  EXPECT_EQ(refused, 3);
  Scrape scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_queue_length"), 1);
  EXPECT_EQ(scrape.Value("tvq_requests_running"), 1);
  EXPECT_EQ(scrape.Value("tvq_state_utilization_ratio"), 1);

  scheduler_->Cancel(*long_running);
  ASSERT_TRUE(outcomes_.WaitFor(3));
  scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "generate"}, {"reason", "cancelled"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "generate"}, {"reason", "deadline"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "generate"}, {"reason", "length"}}),
            1);
  EXPECT_EQ(
      scrape.Value("tvq_requests_rejected_total",
                   {{"kind", "generate"}, {"code", "RESOURCE_EXHAUSTED"}}),
      refused);
  // The expired request never got a slot: no queue wait, no prefill.
  EXPECT_EQ(
      scrape.Value("tvq_queue_wait_seconds_count", {{"kind", "generate"}}), 2);
  EXPECT_EQ(scrape.Value("tvq_request_duration_seconds_count",
                         {{"kind", "generate"}}),
            3);

  // Draining: new requests are refused with UNAVAILABLE.
  EXPECT_EQ(scheduler_->Drain(absl::Seconds(5)), 0);
  auto after_drain = scheduler_->SubmitGeneration(
      Greedy({1, 54}, 2), std::make_shared<CountingSink>(outcomes_));
  ASSERT_FALSE(after_drain.ok());
  EXPECT_EQ(Collect().Value("tvq_requests_rejected_total",
                            {{"kind", "generate"}, {"code", "UNAVAILABLE"}}),
            1);
}

}  // namespace
}  // namespace tvq::metrics
