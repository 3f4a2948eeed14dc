// Test helper: run another program (promtool, prometheus) with its output
// captured in a file.
#ifndef TVQ_TESTS_METRICS_CHILD_PROCESS_H_
#define TVQ_TESTS_METRICS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tvq::testing {

// A directory under $TMPDIR (or /tmp), removed with its content on
// destruction.
class TempDirectory {
 public:
  static absl::StatusOr<TempDirectory> Create();
  TempDirectory(TempDirectory&& other) noexcept
      : path_(std::move(other.path_)) {
    other.path_.clear();
  }
  TempDirectory(const TempDirectory&) = delete;
  TempDirectory& operator=(const TempDirectory&) = delete;
  ~TempDirectory();

  const std::string& path() const { return path_; }
  // Writes `content` into path()/name; returns the file's path.
  absl::StatusOr<std::string> WriteFile(const std::string& name,
                                        const std::string& content) const;

 private:
  explicit TempDirectory(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

class ChildProcess {
 public:
  // Starts argv[0] (a path) with stdin from `stdin_path` (empty: /dev/null)
  // and stdout + stderr into `output_path`.
  static absl::StatusOr<ChildProcess> Start(
      const std::vector<std::string>& argv, const std::string& stdin_path,
      const std::string& output_path);
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // SIGKILLs the process if it still runs.
  ~ChildProcess();

  // The exit code (128 + signal when killed), or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, then SIGKILL after `grace`; returns the exit code.
  int Stop(absl::Duration grace = absl::Seconds(10));
  std::string Output() const;

 private:
  ChildProcess(pid_t pid, std::string output_path)
      : pid_(pid), output_path_(std::move(output_path)) {}
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string output_path_;
};

// Runs a program to completion: exit code and output (stdout + stderr).
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
absl::StatusOr<CommandResult> RunCommand(
    const std::vector<std::string>& argv, const std::string& stdin_path,
    absl::Duration timeout = absl::Seconds(30));

}  // namespace tvq::testing

#endif  // TVQ_TESTS_METRICS_CHILD_PROCESS_H_
