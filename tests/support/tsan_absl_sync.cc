// TSan annotations for Debian's Abseil (the TSan stage of
// scripts/sanitizer-tests.sh preloads this library: LD_PRELOAD).
//
// Debian's libabsl_synchronization is not built with TSan, so TSan cannot
// see that absl::Mutex, CondVar and Notification order memory: every field
// guarded by an absl::Mutex would look racy. This library interposes the
// exported synchronization functions (it is found before
// libabsl_synchronization.so), tells TSan what each one does with the
// __tsan_mutex_* / __tsan_acquire / __tsan_release annotations that
// Abseil's own TSan build uses, and calls the real function (dlsym
// RTLD_NEXT). Inside a lock or unlock TSan ignores memory accesses, as it
// does for an annotated mutex: a Condition evaluated there is not checked.
//
// The __tsan_* functions are declared weak: a process without TSan (ctest
// itself, under the same LD_PRELOAD) loads this library and never calls it.
// Built without -fsanitize=thread for the same reason.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#pragma weak __tsan_mutex_destroy
#pragma weak __tsan_mutex_pre_lock
#pragma weak __tsan_mutex_post_lock
#pragma weak __tsan_mutex_pre_unlock
#pragma weak __tsan_mutex_post_unlock
#pragma weak __tsan_acquire
#pragma weak __tsan_release

namespace {

#define TVQ_TSAN_STRINGIFY_(x) #x
#define TVQ_TSAN_STRINGIFY(x) TVQ_TSAN_STRINGIFY_(x)

// The mangled name of absl::<inline namespace>::<rest> (Itanium ABI: rest is
// what follows the namespace's length and name).
std::string AbslSymbol(const char* rest) {
  const char* name = TVQ_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return "_ZN4absl" + std::to_string(std::strlen(name)) + name + rest;
}
std::string AbslConstSymbol(const char* rest) {
  return "_ZNK" + AbslSymbol(rest).substr(3);
}

void* Real(const std::string& symbol) {
  void* function = dlsym(RTLD_NEXT, symbol.c_str());
  if (function == nullptr) {
    std::fprintf(stderr,
                 "tsan_absl_sync: %s not found after this library (%s); "
                 "the Abseil build differs from the one this shim knows\n",
                 symbol.c_str(), dlerror());
    std::abort();
  }
  return function;
}

bool Active() { return &__tsan_mutex_pre_lock != nullptr; }

// Abseil's functions call one another through the PLT (LockWhenWithTimeout
// tail-calls LockWhenWithDeadline, Notification locks its mutex, ...), so a
// call may arrive here inside another: only the outermost one on a thread
// is annotated (annotating both would count one lock twice).
thread_local int t_depth = 0;
class Annotating {
 public:
  Annotating() : on_(t_depth++ == 0 && Active()) {}
  ~Annotating() { --t_depth; }
  Annotating(const Annotating&) = delete;
  Annotating& operator=(const Annotating&) = delete;

  // Lock and unlock as TSan sees them.
  void PreLock(void* mutex, unsigned flags) const {
    if (on_) __tsan_mutex_pre_lock(mutex, flags);
  }
  void PostLock(void* mutex, unsigned flags) const {
    if (on_) __tsan_mutex_post_lock(mutex, flags, 0);
  }
  void PreUnlock(void* mutex, unsigned flags) const {
    if (on_) __tsan_mutex_pre_unlock(mutex, flags);
  }
  void PostUnlock(void* mutex, unsigned flags) const {
    if (on_) __tsan_mutex_post_unlock(mutex, flags);
  }
  void Acquire(const void* address) const {
    if (on_) __tsan_acquire(const_cast<void*>(address));
  }
  void Release(const void* address) const {
    if (on_) __tsan_release(const_cast<void*>(address));
  }
  void Destroy(void* mutex) const {
    if (on_) __tsan_mutex_destroy(mutex, 0);
  }

 private:
  const bool on_;
};

constexpr unsigned kShared = __tsan_mutex_read_lock;

// A lock that may fail (TryLock): TSan hears of the lock only when it was
// taken. The *LockWhenWith* forms hold the lock whatever they return
// (`try_lock` false).
template <typename Call>
bool AnnotatedLock(void* mutex, unsigned flags, bool try_lock, Call call) {
  const Annotating annotate;
  const unsigned tried = try_lock ? __tsan_mutex_try_lock : 0;
  annotate.PreLock(mutex, flags | tried);
  const bool taken = call();
  annotate.PostLock(mutex, flags | tried |
                               (try_lock && !taken ? __tsan_mutex_try_lock_failed
                                                   : 0));
  return taken;
}

template <typename Call>
void AnnotatedUnlock(void* mutex, unsigned flags, Call call) {
  const Annotating annotate;
  annotate.PreUnlock(mutex, flags);
  call();
  annotate.PostUnlock(mutex, flags);
}

// Await and CondVar::Wait release the mutex while they wait and hold it
// again when they return.
template <typename Call>
auto AnnotatedWait(void* mutex, unsigned flags, Call call) {
  const Annotating annotate;
  annotate.PreUnlock(mutex, flags);
  annotate.PostUnlock(mutex, flags);
  annotate.PreLock(mutex, flags);
  const auto result = call();
  annotate.PostLock(mutex, flags);
  return result;
}

// Notification: the flag's address is the synchronization object (the one
// HasBeenNotified reads).
const void* NotifiedFlag(const absl::Notification* notification) {
  static_assert(sizeof(absl::Notification) >= sizeof(absl::Mutex) + 1);
  return reinterpret_cast<const char*>(notification) + sizeof(absl::Mutex);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

// Mutex.
Mutex::~Mutex() {
  static auto* real = reinterpret_cast<void (*)(Mutex*)>(
      Real(AbslSymbol("5MutexD2Ev")));
  const Annotating annotate;
  annotate.Destroy(this);
  real(this);
}

void Mutex::Lock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<void (*)(Mutex*)>(Real(AbslSymbol("5Mutex4LockEv")));
  AnnotatedLock(this, 0, false, [&] {
    real(this);
    return true;
  });
}

void Mutex::Unlock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<void (*)(Mutex*)>(Real(AbslSymbol("5Mutex6UnlockEv")));
  AnnotatedUnlock(this, 0, [&] { real(this); });
}

bool Mutex::TryLock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*)>(Real(AbslSymbol("5Mutex7TryLockEv")));
  return AnnotatedLock(this, 0, true, [&] { return real(this); });
}

void Mutex::ReaderLock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real = reinterpret_cast<void (*)(Mutex*)>(
      Real(AbslSymbol("5Mutex10ReaderLockEv")));
  AnnotatedLock(this, kShared, false, [&] {
    real(this);
    return true;
  });
}

void Mutex::ReaderUnlock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real = reinterpret_cast<void (*)(Mutex*)>(
      Real(AbslSymbol("5Mutex12ReaderUnlockEv")));
  AnnotatedUnlock(this, kShared, [&] { real(this); });
}

bool Mutex::ReaderTryLock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real = reinterpret_cast<bool (*)(Mutex*)>(
      Real(AbslSymbol("5Mutex13ReaderTryLockEv")));
  return AnnotatedLock(this, kShared, true, [&] { return real(this); });
}

void Mutex::LockWhen(const Condition& cond) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real = reinterpret_cast<void (*)(Mutex*, const Condition*)>(
      Real(AbslSymbol("5Mutex8LockWhenERKNS0_9ConditionE")));
  AnnotatedLock(this, 0, false, [&] {
    real(this, &cond);
    return true;
  });
}

void Mutex::ReaderLockWhen(const Condition& cond)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real = reinterpret_cast<void (*)(Mutex*, const Condition*)>(
      Real(AbslSymbol("5Mutex14ReaderLockWhenERKNS0_9ConditionE")));
  AnnotatedLock(this, kShared, false, [&] {
    real(this, &cond);
    return true;
  });
}

// The *LockWhenWith* forms hold the lock when they return, true or false.
bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*, const Condition*, absl::Duration)>(
          Real(AbslSymbol(
              "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE")));
  return AnnotatedLock(this, 0, false,
                       [&] { return real(this, &cond, timeout); });
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*, const Condition*, absl::Time)>(
          Real(AbslSymbol(
              "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE")));
  return AnnotatedLock(this, 0, false,
                       [&] { return real(this, &cond, deadline); });
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond,
                                      absl::Duration timeout)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*, const Condition*, absl::Duration)>(
          Real(AbslSymbol("5Mutex25ReaderLockWhenWithTimeoutERKNS0_"
                          "9ConditionENS0_8DurationE")));
  return AnnotatedLock(this, kShared, false,
                       [&] { return real(this, &cond, timeout); });
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond,
                                       absl::Time deadline)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*, const Condition*, absl::Time)>(
          Real(AbslSymbol("5Mutex26ReaderLockWhenWithDeadlineERKNS0_"
                          "9ConditionENS0_4TimeE")));
  return AnnotatedLock(this, kShared, false,
                       [&] { return real(this, &cond, deadline); });
}

void Mutex::Await(const Condition& cond) {
  static auto* real = reinterpret_cast<void (*)(Mutex*, const Condition*)>(
      Real(AbslSymbol("5Mutex5AwaitERKNS0_9ConditionE")));
  AnnotatedWait(this, 0, [&] {
    real(this, &cond);
    return true;
  });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*, const Condition*, absl::Duration)>(
          Real(AbslSymbol(
              "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE")));
  return AnnotatedWait(this, 0, [&] { return real(this, &cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto* real =
      reinterpret_cast<bool (*)(Mutex*, const Condition*, absl::Time)>(
          Real(AbslSymbol(
              "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE")));
  return AnnotatedWait(this, 0, [&] { return real(this, &cond, deadline); });
}

// CondVar: the wait releases `mu` and takes it again.
void CondVar::Wait(Mutex* mu) {
  static auto* real = reinterpret_cast<void (*)(CondVar*, Mutex*)>(
      Real(AbslSymbol("7CondVar4WaitEPNS0_5MutexE")));
  AnnotatedWait(mu, 0, [&] {
    real(this, mu);
    return true;
  });
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto* real =
      reinterpret_cast<bool (*)(CondVar*, Mutex*, absl::Duration)>(Real(
          AbslSymbol("7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE")));
  return AnnotatedWait(mu, 0, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto* real =
      reinterpret_cast<bool (*)(CondVar*, Mutex*, absl::Time)>(Real(
          AbslSymbol("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE")));
  return AnnotatedWait(mu, 0, [&] { return real(this, mu, deadline); });
}

// Notification: Notify releases; a wait that saw the notification
// acquires (HasBeenNotified is inline: its atomic load, instrumented in the
// caller, acquires from the same address).
void Notification::Notify() {
  static auto* real = reinterpret_cast<void (*)(Notification*)>(
      Real(AbslSymbol("12Notification6NotifyEv")));
  const Annotating annotate;
  annotate.Release(NotifiedFlag(this));
  real(this);
}

void Notification::WaitForNotification() const {
  static auto* real = reinterpret_cast<void (*)(const Notification*)>(
      Real(AbslConstSymbol("12Notification19WaitForNotificationEv")));
  const Annotating annotate;
  real(this);
  annotate.Acquire(NotifiedFlag(this));
}

bool Notification::WaitForNotificationWithTimeout(
    absl::Duration timeout) const {
  static auto* real =
      reinterpret_cast<bool (*)(const Notification*, absl::Duration)>(
          Real(AbslConstSymbol(
              "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE")));
  const Annotating annotate;
  const bool notified = real(this, timeout);
  if (notified) annotate.Acquire(NotifiedFlag(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static auto* real =
      reinterpret_cast<bool (*)(const Notification*, absl::Time)>(
          Real(AbslConstSymbol(
              "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE")));
  const Annotating annotate;
  const bool notified = real(this, deadline);
  if (notified) annotate.Acquire(NotifiedFlag(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
