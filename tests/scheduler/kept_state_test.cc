// Requests that start from a kept state or keep theirs (StartFrom,
// KeepState), through the scheduler loop with the real CPU runtime on the
// tiny-byte golden model: continuation equals one uninterrupted request, a
// copy leaves its source byte-identical, failures never change a kept state,
// LRU eviction, pinned states, and the errors that name the key.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/scheduler/scheduler.h"
#include "tests/scheduler/recording_sinks.h"
#include "tests/support/test_util.h"

namespace tvq::scheduler {
namespace {

// Records the keys of evicted states.
class EvictionRecorder final : public SchedulerObserver {
 public:
  void OnKeptStateEvicted(std::string_view key) override {
    absl::MutexLock lock(&mutex_);
    evicted_.emplace_back(key);
  }
  std::vector<std::string> evicted() const {
    absl::MutexLock lock(&mutex_);
    return evicted_;
  }

 private:
  mutable absl::Mutex mutex_;
  std::vector<std::string> evicted_ ABSL_GUARDED_BY(mutex_);
};

StartFrom Continue(std::string key) {
  return {.mode = StartFrom::Mode::kContinue, .key = std::move(key)};
}
StartFrom Copy(std::string key) {
  return {.mode = StartFrom::Mode::kCopy, .key = std::move(key)};
}

class KeptStateTest : public ::testing::Test {
 protected:
  void Build(int num_slots, SchedulerObserver* observer = nullptr) {
    SchedulerOptions options;
    options.batch = {.step_token_budget = 16, .prefill_chunk = 8};
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
  void TearDown() override { scheduler_.reset(); }

  int n_vocab() const { return runtime_.config().n_vocab; }

  // A greedy generation of `max_new_tokens` after `prompt`.
  static GenerationRequest Greedy(std::vector<int32_t> prompt,
                                  int max_new_tokens) {
    GenerationRequest request;
    request.request_id = "kept-state-test";
    request.prompt = std::move(prompt);
    request.max_new_tokens = max_new_tokens;
    request.ignore_eos = true;
    request.sampling.temperature = 0;
    return request;
  }

  // Runs `request` to its end; returns its tokens (empty on failure, with
  // `*failure` set when given).
  std::vector<int32_t> Generate(GenerationRequest request,
                                absl::Status* failure = nullptr) {
    auto sink = std::make_shared<RecordingSink>();
    absl::StatusOr<RequestHandle> handle =
        scheduler_->SubmitGeneration(std::move(request), sink);
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (!handle.ok()) return {};
    EXPECT_TRUE(sink->Wait());
    WaitUntilIdle();
    if (failure != nullptr) {
      *failure = sink->failure();
    } else {
      EXPECT_TRUE(sink->failure().ok()) << sink->failure();
    }
    return sink->tokens();
  }

  // The loop releases (or keeps) a slot at the end of the step in which the
  // sink heard of the end; after this the loop is waiting and the pool is
  // quiet.
  void WaitUntilIdle() {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (absl::Now() < give_up) {
      const SchedulerStats stats = scheduler_->Stats();
      if (stats.busy_slots == 0 && stats.queued_requests == 0) return;
      absl::SleepFor(absl::Milliseconds(1));
    }
    ADD_FAILURE() << "the scheduler did not become idle";
  }

  // The kept state under `key`; fails the test if there is none.
  KeptState Kept(const std::string& key) {
    for (const KeptState& kept : scheduler_->KeptStates()) {
      if (kept.key == key) return kept;
    }
    ADD_FAILURE() << "no state kept under \"" << key << "\"";
    return {};
  }

  std::string Export(int slot) {
    absl::StatusOr<std::string> bytes = runtime_.pool->Export(slot);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    return bytes.ok() ? *bytes : std::string();
  }

  testing::GoldenCase golden_;
  core::ModelRuntime runtime_;
  std::unique_ptr<Scheduler> scheduler_;
};

const std::vector<int32_t> kPrompt = {0, 72, 101, 108, 108, 111, 32, 119};

TEST_F(KeptStateTest, ContinuingAKeptGenerationEqualsOneRequest) {
  Build(2);
  const std::vector<int32_t> whole = Generate(Greedy(kPrompt, 10));
  ASSERT_EQ(whole.size(), 10u);

  GenerationRequest first = Greedy(kPrompt, 5);
  first.keep = {.key = "a"};
  const std::vector<int32_t> head = Generate(first);
  ASSERT_EQ(head.size(), 5u);
  const KeptState kept = Kept("a");
  // The state holds the prompt and every generated token but the last.
  EXPECT_EQ(kept.pending_token, head.back());
  EXPECT_EQ(runtime_.pool->position(kept.slot),
            static_cast<int64_t>(kPrompt.size() + head.size() - 1));
  EXPECT_FALSE(kept.pinned);
  const SchedulerStats stats = scheduler_->Stats();
  EXPECT_EQ(stats.busy_slots, 0);
  EXPECT_EQ(stats.retained_slots, 1);
  EXPECT_EQ(stats.free_slots, 2);  // a retained state may be evicted

  GenerationRequest second = Greedy({kept.pending_token}, 5);
  second.start_from = Continue("a");
  const std::vector<int32_t> tail = Generate(second);
  std::vector<int32_t> joined = head;
  joined.insert(joined.end(), tail.begin(), tail.end());
  EXPECT_EQ(joined, whole);
  // Continued in place without keep: the key is gone, the slot free.
  EXPECT_TRUE(scheduler_->KeptStates().empty());
  EXPECT_EQ(scheduler_->Stats().retained_slots, 0);
}

TEST_F(KeptStateTest, ACopyLeavesItsSourceByteIdentical) {
  Build(2);
  const std::vector<int32_t> whole = Generate(Greedy(kPrompt, 10));
  GenerationRequest first = Greedy(kPrompt, 5);
  first.keep = {.key = "a"};
  const std::vector<int32_t> head = Generate(first);
  const KeptState source = Kept("a");
  const std::string before = Export(source.slot);

  for (int fork = 0; fork < 2; ++fork) {
    GenerationRequest copy = Greedy({source.pending_token}, 5);
    copy.start_from = Copy("a");
    const std::vector<int32_t> tail = Generate(copy);
    std::vector<int32_t> joined = head;
    joined.insert(joined.end(), tail.begin(), tail.end());
    EXPECT_EQ(joined, whole) << "fork " << fork;
    EXPECT_EQ(Kept("a").slot, source.slot);
    EXPECT_EQ(Export(source.slot), before) << "fork " << fork;
  }
}

TEST_F(KeptStateTest, CopyAndKeepUnderTheSameKeyAdvancesTheState) {
  Build(2);
  const std::vector<int32_t> whole = Generate(Greedy(kPrompt, 9));
  GenerationRequest first = Greedy(kPrompt, 3);
  first.keep = {.key = "a"};
  std::vector<int32_t> joined = Generate(first);
  for (int turn = 0; turn < 2; ++turn) {
    GenerationRequest next = Greedy({Kept("a").pending_token}, 3);
    next.start_from = Copy("a");
    next.keep = {.key = "a"};
    const std::vector<int32_t> tail = Generate(next);
    joined.insert(joined.end(), tail.begin(), tail.end());
    ASSERT_EQ(scheduler_->KeptStates().size(), 1u);
  }
  EXPECT_EQ(joined, whole);
  EXPECT_EQ(runtime_.pool->position(Kept("a").slot),
            static_cast<int64_t>(kPrompt.size() + whole.size() - 1));
}

TEST_F(KeptStateTest, AFailedRequestFromACopyLeavesTheStateAsItWas) {
  Build(2);
  GenerationRequest first = Greedy(kPrompt, 4);
  first.keep = {.key = "a"};
  Generate(first);
  const KeptState source = Kept("a");
  const std::string before = Export(source.slot);

  // Cancelled, wherever the cancel lands (queue or mid-generation).
  GenerationRequest doomed = Greedy({source.pending_token}, 1000000);
  doomed.start_from = Copy("a");
  doomed.keep = {.key = "a"};
  auto sink = std::make_shared<RecordingSink>();
  absl::StatusOr<RequestHandle> handle =
      scheduler_->SubmitGeneration(doomed, sink);
  ASSERT_TRUE(handle.ok()) << handle.status();
  absl::SleepFor(absl::Milliseconds(5));
  scheduler_->Cancel(*handle);
  ASSERT_TRUE(sink->Wait());
  WaitUntilIdle();
  EXPECT_EQ(sink->failure().code(), absl::StatusCode::kCancelled);

  // Past its deadline after admission.
  GenerationRequest late = Greedy({source.pending_token}, 1000000);
  late.start_from = Copy("a");
  late.keep = {.key = "a"};
  late.deadline = absl::Now() + absl::Milliseconds(20);
  absl::Status failure;
  Generate(late, &failure);
  EXPECT_EQ(failure.code(), absl::StatusCode::kDeadlineExceeded) << failure;

  const KeptState after = Kept("a");
  EXPECT_EQ(after.slot, source.slot);
  EXPECT_EQ(after.pending_token, source.pending_token);
  EXPECT_EQ(Export(after.slot), before);
}

TEST_F(KeptStateTest, ScoringFromAKeptStateMatchesTheGolden) {
  Build(2);
  const int T = static_cast<int>(golden_.tokens.size());
  const int split = 5;  // not a chunk or block boundary
  ASSERT_GT(T, split + 2);
  ScoreRequest head;
  head.tokens.assign(golden_.tokens.begin(), golden_.tokens.begin() + split);
  head.keep = {.key = "s"};
  auto head_sink = std::make_shared<RecordingScoreSink>();
  ASSERT_TRUE(scheduler_->SubmitScore(head, head_sink).ok());
  ASSERT_TRUE(head_sink->Wait());
  ASSERT_TRUE(head_sink->failure().ok()) << head_sink->failure();
  WaitUntilIdle();
  EXPECT_EQ(Kept("s").pending_token, -1);
  EXPECT_EQ(runtime_.pool->position(Kept("s").slot), split);

  ScoreRequest tail;
  tail.tokens.assign(golden_.tokens.begin() + split, golden_.tokens.end());
  tail.start_from = Copy("s");
  auto tail_sink = std::make_shared<RecordingScoreSink>();
  ASSERT_TRUE(scheduler_->SubmitScore(tail, tail_sink).ok());
  ASSERT_TRUE(tail_sink->Wait());
  ASSERT_TRUE(tail_sink->failure().ok()) << tail_sink->failure();
  // tail entry i scores golden token split + i + 1 given everything before.
  const std::vector<TokenLogprob>& entries = tail_sink->result().token_logprobs;
  ASSERT_EQ(entries.size(), static_cast<size_t>(T - split - 1));
  for (size_t i = 0; i < entries.size(); ++i) {
    const size_t position = split + i;
    EXPECT_EQ(entries[i].token_id, golden_.tokens[position + 1]);
    EXPECT_NEAR(
        entries[i].logprob,
        golden_.logprobs[position * n_vocab() + golden_.tokens[position + 1]],
        2e-5)
        << "position " << position;
  }
}

TEST_F(KeptStateTest, AContinuationAmongBusyPeersEqualsItAlone) {
  Build(5);  // the kept state, its copy and three peers all at once
  const std::vector<int32_t> whole = Generate(Greedy(kPrompt, 12));
  GenerationRequest first = Greedy(kPrompt, 4);
  first.keep = {.key = "a"};
  const std::vector<int32_t> head = Generate(first);

  GenerationRequest continuation = Greedy({Kept("a").pending_token}, 8);
  continuation.start_from = Copy("a");
  auto sink = std::make_shared<RecordingSink>();
  std::vector<std::shared_ptr<RecordingSink>> peers;
  for (int peer = 0; peer < 3; ++peer) {
    std::vector<int32_t> prompt(5 + 9 * peer, 65 + peer);  // long prefills
    prompt[0] = 0;
    peers.push_back(std::make_shared<RecordingSink>());
    ASSERT_TRUE(
        scheduler_->SubmitGeneration(Greedy(prompt, 20), peers.back()).ok());
  }
  ASSERT_TRUE(scheduler_->SubmitGeneration(continuation, sink).ok());
  ASSERT_TRUE(sink->Wait());
  for (const auto& peer : peers) ASSERT_TRUE(peer->Wait());
  ASSERT_TRUE(sink->failure().ok()) << sink->failure();
  std::vector<int32_t> joined = head;
  const std::vector<int32_t> tail = sink->tokens();
  joined.insert(joined.end(), tail.begin(), tail.end());
  EXPECT_EQ(joined, whole);
}

TEST_F(KeptStateTest, RetainedStatesAreEvictedLeastRecentlyUsedFirst) {
  // A local: the scheduler, which reports to it from its own thread, is
  // stopped at the end of this body (TearDown would be too late: the
  // recorder is gone by then, a use after scope under ASan).
  EvictionRecorder recorder;
  Build(2, &recorder);
  for (const char* key : {"old", "new"}) {
    GenerationRequest request = Greedy(kPrompt, 2);
    request.keep = {.key = key};
    Generate(request);
  }
  ASSERT_EQ(scheduler_->KeptStates().size(), 2u);
  EXPECT_EQ(scheduler_->Stats().free_slots, 2);
  Generate(Greedy(kPrompt, 2));  // needs a slot: "old" goes
  ASSERT_EQ(scheduler_->KeptStates().size(), 1u);
  EXPECT_EQ(scheduler_->KeptStates()[0].key, "new");
  EXPECT_EQ(recorder.evicted(), std::vector<std::string>{"old"});

  absl::Status failure;
  GenerationRequest gone = Greedy({1}, 2);
  gone.start_from = Continue("old");
  Generate(gone, &failure);
  EXPECT_EQ(failure.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(failure.message(), "admission: no state is kept under key \"old\"");
  scheduler_.reset();
}

TEST_F(KeptStateTest, PinnedStatesAreNeverEvicted) {
  Build(1);
  GenerationRequest pinned = Greedy(kPrompt, 2);
  pinned.keep = {.key = "p", .pinned = true};
  Generate(pinned);
  const SchedulerStats stats = scheduler_->Stats();
  EXPECT_EQ(stats.pinned_slots, 1);
  EXPECT_EQ(stats.free_slots, 0);
  EXPECT_EQ(stats.busy_slots, 0);
  const std::string before = Export(Kept("p").slot);

  // No slot will ever come for an empty start: it fails at once.
  absl::Status failure;
  Generate(Greedy(kPrompt, 2), &failure);
  EXPECT_EQ(failure.code(), absl::StatusCode::kResourceExhausted) << failure;
  // Nor for a copy (it would need a second slot).
  GenerationRequest copy = Greedy({Kept("p").pending_token}, 2);
  copy.start_from = Copy("p");
  Generate(copy, &failure);
  EXPECT_EQ(failure.code(), absl::StatusCode::kResourceExhausted) << failure;
  EXPECT_EQ(Export(Kept("p").slot), before);
  // Continuing it in place works, and keeps it pinned when asked.
  GenerationRequest next = Greedy({Kept("p").pending_token}, 2);
  next.start_from = Continue("p");
  next.keep = {.key = "p", .pinned = true};
  EXPECT_EQ(Generate(next).size(), 2u);
  EXPECT_TRUE(Kept("p").pinned);
}

TEST_F(KeptStateTest, BadStartsAreRefusedOrFailNamingTheKey) {
  Build(2);
  GenerationRequest no_key = Greedy(kPrompt, 2);
  no_key.start_from.mode = StartFrom::Mode::kCopy;
  absl::StatusOr<RequestHandle> refused =
      scheduler_->SubmitGeneration(no_key, std::make_shared<RecordingSink>());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);

  ScoreRequest unknown;
  unknown.tokens = {0, 1, 2};
  unknown.start_from = Continue("nope");
  auto sink = std::make_shared<RecordingScoreSink>();
  ASSERT_TRUE(scheduler_->SubmitScore(unknown, sink).ok());
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->failure().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sink->failure().message(),
            "admission: no state is kept under key \"nope\"");
  WaitUntilIdle();
  const SchedulerStats stats = scheduler_->Stats();
  EXPECT_EQ(stats.busy_slots, 0);
  EXPECT_EQ(stats.free_slots, 2);
}

}  // namespace
}  // namespace tvq::scheduler
