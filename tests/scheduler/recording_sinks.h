// Sinks for scheduler tests: they record what the scheduler reports for a
// generation or a score and let the test wait for its end (30 s at most).
#ifndef TVQ_TESTS_SCHEDULER_RECORDING_SINKS_H_
#define TVQ_TESTS_SCHEDULER_RECORDING_SINKS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/scheduler/request.h"

namespace tvq::scheduler {

class RecordingSink final : public TokenSink {
 public:
  void OnTokens(TokenUpdate update) override {
    absl::MutexLock lock(&mutex_);
    Append(update);
  }
  void OnFinished(TokenUpdate update, const Completion& completion) override {
    absl::MutexLock lock(&mutex_);
    Append(update);
    completion_ = completion;
    done_.Notify();
  }
  void OnFailed(const absl::Status& status) override {
    absl::MutexLock lock(&mutex_);
    failure_ = status;
    done_.Notify();
  }

  bool Wait(absl::Duration timeout = absl::Seconds(30)) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }
  std::vector<int32_t> tokens() const {
    absl::MutexLock lock(&mutex_);
    return tokens_;
  }
  size_t num_tokens() const {
    absl::MutexLock lock(&mutex_);
    return tokens_.size();
  }
  std::string text() const {
    absl::MutexLock lock(&mutex_);
    return text_;
  }
  Completion completion() const {
    absl::MutexLock lock(&mutex_);
    return completion_;
  }
  absl::Status failure() const {
    absl::MutexLock lock(&mutex_);
    return failure_;
  }

 private:
  void Append(const TokenUpdate& update) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    tokens_.insert(tokens_.end(), update.token_ids.begin(),
                   update.token_ids.end());
    text_ += update.text;
  }

  mutable absl::Mutex mutex_;
  std::vector<int32_t> tokens_ ABSL_GUARDED_BY(mutex_);
  std::string text_ ABSL_GUARDED_BY(mutex_);
  Completion completion_ ABSL_GUARDED_BY(mutex_);
  absl::Status failure_ ABSL_GUARDED_BY(mutex_);
  absl::Notification done_;
};

class RecordingScoreSink final : public ScoreSink {
 public:
  void OnScored(ScoreResult result) override {
    result_ = std::move(result);
    done_.Notify();
  }
  void OnFailed(const absl::Status& status) override {
    failure_ = status;
    done_.Notify();
  }
  bool Wait() {
    return done_.WaitForNotificationWithTimeout(absl::Seconds(30));
  }
  const ScoreResult& result() const { return result_; }
  const absl::Status& failure() const { return failure_; }

 private:
  ScoreResult result_;
  absl::Status failure_;
  absl::Notification done_;
};

}  // namespace tvq::scheduler

#endif  // TVQ_TESTS_SCHEDULER_RECORDING_SINKS_H_
