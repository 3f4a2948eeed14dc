#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/text/utf8.h"

namespace tvq::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string NewLogPath() {
  const char* directory = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(
      directory != nullptr && directory[0] != '\0' ? directory : "/tmp",
      "/tvq-server-XXXXXX");
  const int fd = ::mkstemp(pattern.data());
  if (fd >= 0) ::close(fd);
  return pattern;
}

// fork + exec of tvq-server with output into `log_path`.
pid_t Spawn(const std::vector<std::string>& flags, const std::string& log_path,
            const std::vector<ResourceLimit>& limits = {}) {
  std::vector<std::string> arguments = {TVQ_SERVER_BINARY};
  arguments.insert(arguments.end(), flags.begin(), flags.end());
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // Child.
  for (const ResourceLimit& limit : limits) {
    const rlimit value{limit.soft, limit.hard};
    if (::setrlimit(limit.resource, &value) != 0) {
      std::perror("setrlimit");
      ::_exit(126);
    }
  }
  const int fd = ::open(log_path.c_str(), O_WRONLY | O_TRUNC | O_CREAT, 0644);
  if (fd >= 0) {
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  std::perror("execv tvq-server");
  ::_exit(127);
}

}  // namespace

std::string GoldenModel(const std::string& name) {
  return absl::StrCat(TVQ_TEST_DATA_DIR, "/golden/", name, "/model");
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& model_dir, const std::vector<std::string>& extra_flags,
    absl::Duration timeout, const std::vector<ResourceLimit>& limits) {
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->log_path_ = NewLogPath();
  std::vector<std::string> flags = {absl::StrCat("--model=", model_dir),
                                    "--listen=127.0.0.1:0",
                                    "--metrics-address=", "--threads=1"};
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  server->pid_ = Spawn(flags, server->log_path_, limits);
  if (server->pid_ < 0) return absl::InternalError("fork failed");

  const absl::Time deadline = absl::Now() + timeout;
  if (absl::Status listening = server->WaitUntilListening(timeout);
      !listening.ok()) {
    return listening;
  }
  while (HealthStatus(*server->health_, "") != "SERVING") {
    if (server->WaitForExit(absl::ZeroDuration()).has_value() ||
        absl::Now() > deadline) {
      return absl::InternalError(absl::StrCat(
          "tvq-server did not become SERVING:\n", server->Output()));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return server;
}

absl::Status ServerProcess::WaitUntilListening(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  // The chosen port is logged: "listening on 127.0.0.1:PORT ".
  constexpr char kMarker[] = "listening on ";
  while (address_.empty()) {
    const std::string output = Output();
    const size_t at = output.find(kMarker);
    if (at != std::string::npos) {
      const size_t begin = at + sizeof(kMarker) - 1;
      const size_t end = output.find(' ', begin);
      if (end != std::string::npos) {
        address_ = output.substr(begin, end - begin);
        break;
      }
    }
    if (WaitForExit(absl::ZeroDuration()).has_value() ||
        absl::Now() > deadline) {
      return absl::InternalError(
          absl::StrCat("tvq-server did not start listening:\n", output));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  stub_ = v1::TextGeneration::NewStub(channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Launch(
    const std::vector<std::string>& flags,
    const std::vector<ResourceLimit>& limits) {
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->log_path_ = NewLogPath();
  server->pid_ = Spawn(flags, server->log_path_, limits);
  if (server->pid_ < 0) return absl::InternalError("fork failed");
  return server;
}

ServerProcess::Exit ServerProcess::RunToExit(
    const std::vector<std::string>& flags, absl::Duration timeout,
    const std::vector<ResourceLimit>& limits) {
  ServerProcess process;
  process.log_path_ = NewLogPath();
  process.pid_ = Spawn(flags, process.log_path_, limits);
  Exit result;
  const std::optional<int> code = process.WaitForExit(timeout);
  result.exit_code = code.value_or(-1);
  result.output = process.Output();
  return result;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  if (!log_path_.empty()) std::remove(log_path_.c_str());
}

void ServerProcess::Signal(int signal_number) {
  if (pid_ > 0 && !exited_) ::kill(pid_, signal_number);
}

std::optional<int> ServerProcess::WaitForExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!exited_) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exited_ = true;
      exit_code_ =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return exit_code_;
}

std::string ServerProcess::Output() const { return ReadFile(log_path_); }

std::string HealthStatus(grpc::health::v1::Health::Stub& health,
                         const std::string& service) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = health.Check(&context, request, &response);
  if (!status.ok()) return absl::StrCat("error: ", status.error_message());
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
      response.status());
}

bool IsValidUtf8(const std::string& text) { return runtime::IsValidUtf8(text); }

}  // namespace tvq::testing
