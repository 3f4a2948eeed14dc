#include "tests/metrics/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tvq::testing {

absl::StatusOr<TempDirectory> TempDirectory::Create() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && base[0] != '\0' ? base : "/tmp",
                   "/tvq-metrics-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  return TempDirectory(std::move(pattern));
}

TempDirectory::~TempDirectory() {
  if (path_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

absl::StatusOr<std::string> TempDirectory::WriteFile(
    const std::string& name, const std::string& content) const {
  const std::string path = absl::StrCat(path_, "/", name);
  std::ofstream file(path, std::ios::binary);
  file << content;
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path));
  return path;
}

absl::StatusOr<ChildProcess> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& stdin_path,
    const std::string& output_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  if (access(argv[0].c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat(argv[0], " is not an executable (", std::strerror(errno),
                     "); scripts/install-deps.sh installs it"));
  }
  // Everything the child needs is prepared before fork: a multi-threaded
  // parent's child may only make async-signal-safe calls.
  std::vector<std::string> arguments = argv;
  std::vector<char*> pointers;
  for (std::string& argument : arguments) pointers.push_back(argument.data());
  pointers.push_back(nullptr);
  const std::string input = stdin_path.empty() ? "/dev/null" : stdin_path;
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    const int in = open(input.c_str(), O_RDONLY);
    const int out =
        open(output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in >= 0) dup2(in, STDIN_FILENO);
    if (out >= 0) {
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
    }
    execv(pointers[0], pointers.data());
    _exit(127);
  }
  return ChildProcess(pid, output_path);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_),
      exited_(other.exited_),
      exit_code_(other.exit_code_),
      output_path_(std::move(other.output_path_)) {
  other.pid_ = -1;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!exited_) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exited_ = true;
      exit_code_ =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return exit_code_;
}

int ChildProcess::Stop(absl::Duration grace) {
  if (!exited_) kill(pid_, SIGTERM);
  if (std::optional<int> code = Wait(grace)) return *code;
  kill(pid_, SIGKILL);
  return Wait(absl::InfiniteDuration()).value_or(-1);
}

std::string ChildProcess::Output() const {
  std::ifstream file(output_path_);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::string& stdin_path,
                                         absl::Duration timeout) {
  absl::StatusOr<TempDirectory> directory = TempDirectory::Create();
  if (!directory.ok()) return directory.status();
  absl::StatusOr<ChildProcess> child = ChildProcess::Start(
      argv, stdin_path, absl::StrCat(directory->path(), "/output"));
  if (!child.ok()) return child.status();
  const std::optional<int> code = child->Wait(timeout);
  if (!code.has_value()) {
    child->Stop(absl::ZeroDuration());
    return absl::DeadlineExceededError(
        absl::StrCat(argv[0], " did not finish in ",
                     absl::FormatDuration(timeout), ":\n", child->Output()));
  }
  return CommandResult{*code, child->Output()};
}

}  // namespace tvq::testing
