// SIGTERM and SIGINT for tvq-server, whatever thread the kernel picks.
//
// Blocking the signals in main() is not enough: shared libraries start
// threads before main() runs (OpenBLAS's constructor starts its workers with
// an empty signal mask), and a signal delivered to such a thread takes its
// default action and kills the process. So StopSignals installs a handler
// (the disposition is process-wide): whichever thread receives the signal
// only writes its number to a pipe, and a watcher thread turns it into a
// call of the current callback. A second or later signal is reported the
// same way, with its count; it never kills the process.
//
// SIGHUP goes the same way but is no stop signal: it is not counted, and
// it calls the reload callback (tvq-server re-reads --api-keys-file), or
// nothing when none is set. It never kills the process either.
#ifndef TVQ_SERVER_PROCESS_STOP_SIGNALS_H_
#define TVQ_SERVER_PROCESS_STOP_SIGNALS_H_

#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tvq::process {

class StopSignals {
 public:
  // Called on the watcher thread for each signal: its number and how many
  // stop signals arrived so far (1 for the first).
  using Callback = std::function<void(int signal_number, int count)>;

  using ReloadCallback = std::function<void()>;

  // Installs the handlers for SIGTERM, SIGINT and SIGHUP, blocks them in the calling
  // thread (threads it starts later inherit the mask) and starts the watcher
  // thread. One instance per process.
  static absl::StatusOr<std::unique_ptr<StopSignals>> Install();

  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // Stops the watcher (signals arriving later are ignored, never fatal).
  ~StopSignals();

  // Replaces the callback; waits for a call of the previous one in progress
  // to return, so that what it used may be destroyed afterwards.
  void SetCallback(Callback callback);
  // The same for SIGHUP's callback (null = SIGHUP does nothing).
  void SetReloadCallback(ReloadCallback callback);

  // Waits until at least `count` signals arrived or `deadline` passed;
  // returns the number of the latest signal, 0 on timeout.
  int WaitForCount(int count, absl::Time deadline = absl::InfiniteFuture());
  int count() const;

 private:
  StopSignals(int read_fd, int write_fd);
  void Watch();

  const int read_fd_;
  const int write_fd_;
  // Held while the callback runs.
  absl::Mutex callback_mutex_;
  Callback callback_ ABSL_GUARDED_BY(callback_mutex_);
  ReloadCallback reload_callback_ ABSL_GUARDED_BY(callback_mutex_);
  mutable absl::Mutex mutex_;
  int count_ ABSL_GUARDED_BY(mutex_) = 0;
  int last_signal_ ABSL_GUARDED_BY(mutex_) = 0;
  std::thread watcher_;
};

// "SIGTERM", "SIGINT", "SIGHUP" or "a stop signal".
const char* StopSignalName(int signal_number);

}  // namespace tvq::process

#endif  // TVQ_SERVER_PROCESS_STOP_SIGNALS_H_
