#include "server/process/stop_signals.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tvq::process {
namespace {

// The pipe the handler writes to (-1 before Install).
std::atomic<int> signal_pipe{-1};

// Async-signal-safe: one write of one byte.
void HandleStopSignal(int signal_number) {
  const int saved_errno = errno;
  const int fd = signal_pipe.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const unsigned char byte = static_cast<unsigned char>(signal_number);
    [[maybe_unused]] ssize_t written = ::write(fd, &byte, 1);
  }
  errno = saved_errno;
}

// The byte the destructor writes to stop the watcher.
constexpr unsigned char kStopWatcher = 0;

sigset_t StopSignalSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

const char* StopSignalName(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "a stop signal";
  }
}

absl::StatusOr<std::unique_ptr<StopSignals>> StopSignals::Install() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return absl::ErrnoToStatus(errno, "cannot create the signal pipe");
  }
  // A full pipe must never block the handler (a flood of signals is
  // reported as fewer, which is harmless).
  ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  int expected = -1;
  if (!signal_pipe.compare_exchange_strong(expected, fds[1])) {
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::FailedPreconditionError("StopSignals is already installed");
  }
  const sigset_t set = StopSignalSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = HandleStopSignal;
  sigfillset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signal_number : {SIGTERM, SIGINT, SIGHUP}) {
    if (::sigaction(signal_number, &action, nullptr) != 0) {
      return absl::ErrnoToStatus(errno,
                                 absl::StrCat("cannot install the handler for ",
                                              StopSignalName(signal_number)));
    }
  }
  std::unique_ptr<StopSignals> signals(new StopSignals(fds[0], fds[1]));
  signals->watcher_ = std::thread([raw = signals.get()] { raw->Watch(); });
  return signals;
}

StopSignals::StopSignals(int read_fd, int write_fd)
    : read_fd_(read_fd), write_fd_(write_fd) {}

StopSignals::~StopSignals() {
  // The handler stays installed (a late signal must not kill the process
  // while it exits) but writes nowhere.
  signal_pipe.store(-1);
  const unsigned char byte = kStopWatcher;
  while (::write(write_fd_, &byte, 1) < 0 && errno == EINTR) {
  }
  if (watcher_.joinable()) watcher_.join();
  ::close(read_fd_);
  ::close(write_fd_);
}

void StopSignals::Watch() {
  // This thread takes the signals too: with no other thread able to
  // receive them (all blocked), they would stay pending forever.
  const sigset_t set = StopSignalSet();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  while (true) {
    unsigned char byte = 0;
    const ssize_t count = ::read(read_fd_, &byte, 1);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0 || byte == kStopWatcher) return;
    if (byte == SIGHUP) {
      absl::MutexLock lock(&callback_mutex_);
      if (reload_callback_) reload_callback_();
      continue;
    }
    int total = 0;
    {
      absl::MutexLock lock(&mutex_);
      total = ++count_;
      last_signal_ = byte;
    }
    absl::MutexLock lock(&callback_mutex_);
    if (callback_) callback_(byte, total);
  }
}

void StopSignals::SetCallback(Callback callback) {
  absl::MutexLock lock(&callback_mutex_);
  callback_ = std::move(callback);
}

void StopSignals::SetReloadCallback(ReloadCallback callback) {
  absl::MutexLock lock(&callback_mutex_);
  reload_callback_ = std::move(callback);
}

int StopSignals::WaitForCount(int count, absl::Time deadline) {
  absl::MutexLock lock(&mutex_);
  auto reached = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return count_ >= count;
  };
  if (!mutex_.AwaitWithDeadline(absl::Condition(&reached), deadline)) {
    return 0;
  }
  return last_signal_;
}

int StopSignals::count() const {
  absl::MutexLock lock(&mutex_);
  return count_;
}

}  // namespace tvq::process
