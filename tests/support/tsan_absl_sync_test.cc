// The TSan stage's Abseil annotations (tsan_absl_sync.cc, preloaded): plain,
// unsynchronized-looking data handed from one thread to another through
// each absl synchronization primitive the project uses. TSan (halt on
// error) sees a race in every one of these handoffs unless the preloaded
// library tells it what Debian's uninstrumented Abseil does; the test fails
// fast when the library is missing.
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

TEST(TsanAbslSyncTest, TheAnnotationsArePreloaded) {
  const char* preload = std::getenv("LD_PRELOAD");
  ASSERT_NE(preload, nullptr) << "run through scripts/sanitizer-tests.sh tsan";
  EXPECT_NE(std::strstr(preload, "tvq_tsan_absl_sync"), nullptr) << preload;
}

TEST(TsanAbslSyncTest, MutexLockAndReaderLock) {
  absl::Mutex mutex;
  int value = 0;
  std::thread writer([&] {
    for (int i = 0; i < 1000; ++i) {
      absl::MutexLock lock(&mutex);
      ++value;
    }
  });
  for (int i = 0; i < 1000; ++i) {
    absl::ReaderMutexLock lock(&mutex);
    EXPECT_GE(value, 0);
  }
  writer.join();
  absl::MutexLock lock(&mutex);
  EXPECT_EQ(value, 1000);
}

TEST(TsanAbslSyncTest, TryLock) {
  absl::Mutex mutex;
  int value = 0;
  std::thread writer([&] {
    while (!mutex.TryLock()) std::this_thread::yield();
    value = 1;
    mutex.Unlock();
  });
  int seen = 0;
  while (seen == 0) {
    if (!mutex.ReaderTryLock()) continue;
    seen = value;
    mutex.ReaderUnlock();
  }
  EXPECT_EQ(seen, 1);
  writer.join();
}

TEST(TsanAbslSyncTest, AwaitAndLockWhen) {
  absl::Mutex mutex;
  bool ready = false;
  int payload = 0;
  std::thread producer([&] {
    absl::MutexLock lock(&mutex);
    payload = 42;
    ready = true;
  });
  {
    absl::MutexLock lock(&mutex);
    mutex.Await(absl::Condition(&ready));
    EXPECT_EQ(payload, 42);
  }
  producer.join();
  ready = false;
  std::thread second([&] {
    absl::MutexLock lock(&mutex);
    payload = 7;
    ready = true;
  });
  ASSERT_TRUE(mutex.LockWhenWithTimeout(absl::Condition(&ready),
                                        absl::Seconds(60)));
  EXPECT_EQ(payload, 7);
  mutex.Unlock();
  second.join();
}

TEST(TsanAbslSyncTest, CondVarWait) {
  absl::Mutex mutex;
  absl::CondVar changed;
  int stage = 0;
  std::thread worker([&] {
    absl::MutexLock lock(&mutex);
    while (stage != 1) changed.Wait(&mutex);
    stage = 2;
    changed.SignalAll();
  });
  {
    absl::MutexLock lock(&mutex);
    stage = 1;
    changed.SignalAll();
    while (stage != 2) changed.WaitWithTimeout(&mutex, absl::Seconds(1));
  }
  worker.join();
  EXPECT_EQ(stage, 2);
}

TEST(TsanAbslSyncTest, Notification) {
  int payload = 0;
  absl::Notification done;
  std::thread producer([&] {
    payload = 5;
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_EQ(payload, 5);
  producer.join();

  int polled = 0;
  absl::Notification flag;
  std::thread poller_source([&] {
    polled = 9;
    flag.Notify();
  });
  while (!flag.HasBeenNotified()) std::this_thread::yield();
  EXPECT_EQ(polled, 9);
  poller_source.join();

  int timed = 0;
  absl::Notification timed_flag;
  std::thread timed_source([&] {
    timed = 3;
    timed_flag.Notify();
  });
  ASSERT_TRUE(timed_flag.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(timed, 3);
  timed_source.join();
}

}  // namespace
