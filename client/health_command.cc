#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "client/client_status.h"
#include "client/commands.h"
#include "client/proto_json.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"

namespace tvq::client {
namespace {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

constexpr auto kRetryInterval = std::chrono::milliseconds(100);

class HealthCommand final : public Command {
 public:
  std::string name() const override { return "health"; }
  std::string summary() const override {
    return "Ask the server's gRPC health service whether it is SERVING.";
  }
  std::string synopsis() const override { return "health [flags]"; }
  std::string description() const override {
    return "Calls grpc.health.v1.Health/Check and prints the status "
           "(SERVING, NOT_SERVING, UNKNOWN). Exits 0 only when the status is "
           "SERVING. With --wait, keeps asking (every 100 ms, also while the "
           "server cannot be reached) until it is SERVING or the time is "
           "up: handy right after starting tvq-server. With --json: "
           "{\"service\": \"...\", \"status\": \"SERVING\"}.";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("service", &service_, "NAME",
              "Service to ask about; empty = the server as a whole (e.g. "
              "tvq.v1.TextGeneration).");
    flags.Add("wait", &wait_seconds_, "SECONDS",
              "Retry until SERVING for up to SECONDS; 0 = ask once.");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    if (!args.empty()) {
      return UsageError(
          absl::StrFormat("health takes no arguments, got \"%s\"", args[0]));
    }
    if (wait_seconds_ < 0) {
      return UsageError(absl::StrFormat("--wait must be >= 0 seconds, got %g",
                                        wait_seconds_));
    }
    std::unique_ptr<grpc::health::v1::Health::Stub> stub =
        grpc::health::v1::Health::NewStub(MakeChannel(global));
    HealthCheckRequest request;
    request.set_service(service_);
    const auto give_up_at =
        std::chrono::steady_clock::now() +
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(wait_seconds_));

    for (;;) {
      grpc::ClientContext context;
      ApplyTimeout(global, context);
      if (global.timeout_seconds <= 0 && wait_seconds_ > 0) {
        // No --timeout: one attempt may not outlast the wait.
        context.set_deadline(
            std::chrono::system_clock::now() +
            std::max<std::chrono::steady_clock::duration>(
                give_up_at - std::chrono::steady_clock::now(), kRetryInterval));
      }
      HealthCheckResponse response;
      grpc::Status status = stub->Check(&context, request, &response);
      const bool serving =
          status.ok() && response.status() == HealthCheckResponse::SERVING;
      const auto retry_at = std::chrono::steady_clock::now() + kRetryInterval;
      if (serving || retry_at > give_up_at) {
        if (!status.ok()) return FromGrpcStatus(status);
        return Report(global, response.status());
      }
      std::this_thread::sleep_until(retry_at);
    }
  }

 private:
  absl::Status Report(const GlobalOptions& global,
                      HealthCheckResponse::ServingStatus serving_status) const {
    const std::string name =
        HealthCheckResponse::ServingStatus_Name(serving_status);
    if (global.json) {
      absl::PrintF("%s\n", DumpJson({{"service", service_}, {"status", name}}));
    } else {
      absl::PrintF("%s\n", name);
    }
    if (serving_status != HealthCheckResponse::SERVING) {
      return absl::UnavailableError(
          absl::StrFormat("service \"%s\" is %s", service_, name));
    }
    return absl::OkStatus();
  }

  std::string service_;
  double wait_seconds_ = 0;
};

}  // namespace

std::unique_ptr<Command> MakeHealthCommand() {
  return std::make_unique<HealthCommand>();
}

}  // namespace tvq::client
