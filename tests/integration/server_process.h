// Runs the real tvq-server binary for a test: spawns it on a free loopback
// port, waits until health says SERVING, and stops or kills it.
#ifndef TVQ_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define TVQ_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <sys/resource.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::testing {

// Path of a golden model directory, e.g. GoldenModel("tiny-byte").
std::string GoldenModel(const std::string& name);

// Resource limits set in the child before tvq-server starts (soft, hard).
struct ResourceLimit {
  int resource = RLIMIT_NOFILE;
  rlim_t soft = RLIM_INFINITY;
  rlim_t hard = RLIM_INFINITY;
};

class ServerProcess {
 public:
  // Starts tvq-server with `--model=model_dir --listen=127.0.0.1:0` and
  // `extra_flags`; waits up to `timeout` for SERVING.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& model_dir, const std::vector<std::string>& extra_flags,
      absl::Duration timeout = absl::Seconds(20),
      const std::vector<ResourceLimit>& limits = {});
  // Runs tvq-server with `flags` (nothing added) and returns its exit code
  // and output, for start-up errors.
  struct Exit {
    int exit_code = -1;
    std::string output;
  };
  static Exit RunToExit(const std::vector<std::string>& flags,
                        absl::Duration timeout = absl::Seconds(20),
                        const std::vector<ResourceLimit>& limits = {});
  // Spawns tvq-server with `flags` (nothing added) under `limits` and
  // returns at once; address() and the stubs are set once the output says
  // "listening on" (WaitUntilListening).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Launch(
      const std::vector<std::string>& flags,
      const std::vector<ResourceLimit>& limits = {});
  // Waits for "listening on ADDRESS" and connects the stubs.
  absl::Status WaitUntilListening(absl::Duration timeout = absl::Seconds(20));
  pid_t pid() const { return pid_; }

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  // Kills the process if it still runs.
  ~ServerProcess();

  const std::string& address() const { return address_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  v1::TextGeneration::Stub& stub() { return *stub_; }
  grpc::health::v1::Health::Stub& health() { return *health_; }

  // Sends a signal.
  void Signal(int signal_number);
  // Waits for the process to exit; its exit code, or nullopt on timeout.
  std::optional<int> WaitForExit(absl::Duration timeout);
  // Everything the server printed so far.
  std::string Output() const;

 private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string log_path_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// A health check of `service` ("" = the server): the status name.
std::string HealthStatus(grpc::health::v1::Health::Stub& health,
                         const std::string& service);

// Whether `text` is valid UTF-8.
bool IsValidUtf8(const std::string& text);

}  // namespace tvq::testing

#endif  // TVQ_TESTS_INTEGRATION_SERVER_PROCESS_H_
