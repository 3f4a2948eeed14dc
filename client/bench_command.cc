#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/bench_report.h"
#include "client/client_status.h"
#include "client/commands.h"
#include "client/load_generator.h"
#include "client/proto_json.h"
#include "grpcpp/client_context.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::client {
namespace {

constexpr int32_t kDefaultRequests = 100;

class BenchCommand final : public Command {
 public:
  std::string name() const override { return "bench"; }
  std::string summary() const override {
    return "Load generator: many concurrent streams, latency percentiles.";
  }
  std::string synopsis() const override { return "bench [flags]"; }
  std::string description() const override {
    return "Runs GenerateStream calls with random token-id prompts and "
           "reports requests/s, generated tokens/s, time to first token, "
           "inter-token latency and request latency (mean, p50, p90, p99, "
           "max), and how many streams ended with each gRPC status code. "
           "All streams share one process and the gRPC callback API (no "
           "thread per stream), so thousands can be open at once.\n\n"
           "Closed loop by default: --concurrency streams are kept open "
           "until --requests have run (or --duration has passed). With "
           "--rate, arrivals are open-loop (Poisson at that rate) and "
           "--concurrency caps the streams open at once; latencies then "
           "count from the scheduled arrival, so time spent waiting for a "
           "free stream shows up. --cancel-fraction cancels that share of "
           "the streams after a random number of tokens; their CANCELLED "
           "status is expected and not a failure. --slow-reader-fraction makes "
           "that share read slowly (--slow-read-delay before each next "
           "message), --short-deadline-fraction gives that share the "
           "deadline --short-deadline instead of --timeout; their "
           "DEADLINE_EXCEEDED is expected too.\n\n"
           "Exits non-zero when any stream fails (any status other than OK, "
           "CANCELLED for a stream the bench did not cancel, or "
           "DEADLINE_EXCEEDED for one without the short deadline). With "
           "--json, the report is one JSON object (docs/client.md).";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("concurrency", &config_.concurrency, "N",
              "Streams open at once (with --rate: the most open at once).");
    flags.Add("requests", &requests_, "M",
              "Streams to run in all (default 100, or no limit when "
              "--duration is given).");
    flags.Add("duration", &config_.duration_seconds, "SECONDS",
              "Stop starting streams after SECONDS (running ones finish); 0 "
              "= no time limit.");
    flags.Add("prompt-tokens", &config_.prompt_tokens, "P",
              "Prompt length fed to the model: eos_id then P - 1 random "
              "token ids.");
    flags.Add("max-new-tokens", &config_.max_new_tokens, "K",
              "Tokens to generate per stream.");
    flags.Add("ignore-eos", &config_.ignore_eos, "BOOL",
              "Keep generating past eos so every stream yields K tokens "
              "(--ignore-eos=false lets eos end streams early).");
    flags.Add("temperature", &config_.temperature, "FLOAT",
              "Sampling temperature (server default 1; 0 = greedy).");
    flags.Add("cancel-fraction", &config_.cancel_fraction, "F",
              "Share of streams to cancel mid-way, in [0, 1].");
    flags.Add("slow-reader-fraction", &config_.slow_reader_fraction, "F",
              "Share of streams that read slowly, in [0, 1].");
    flags.Add("slow-read-delay", &config_.slow_read_delay_seconds, "SECONDS",
              "How long a slow reader waits before each next read (default "
              "0.05).");
    flags.Add("short-deadline-fraction", &config_.short_deadline_fraction,
              "F",
              "Share of streams run with --short-deadline instead of "
              "--timeout, in [0, 1].");
    flags.Add("short-deadline", &config_.short_deadline_seconds, "SECONDS",
              "The deadline of those streams (default 0.5).");
    flags.Add("rate", &config_.rate, "R",
              "Open-loop arrivals: R new streams per second on average "
              "(Poisson); 0 = closed loop.");
    flags.Add("seed", &seed_, "UINT64",
              "Seed of the prompts, cancellation points, arrival times and "
              "sampling seeds (stream i samples with seed + i).");
    flags.Add("channels", &channels_, "N",
              "Spread the streams over N gRPC channels, each with its own "
              "connection.");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    if (!args.empty()) {
      return UsageError(
          absl::StrFormat("bench takes no arguments, got \"%s\"", args[0]));
    }
    if (requests_.has_value()) {
      config_.requests = *requests_;
    } else {
      config_.requests = config_.duration_seconds > 0 ? 0 : kDefaultRequests;
    }
    config_.seed = seed_.value_or(1);
    config_.timeout_seconds = global.timeout_seconds;
    if (absl::Status valid = ValidateLoadConfig(config_); !valid.ok()) {
      return UsageError(std::string(valid.message()));
    }
    if (channels_ < 1) {
      return UsageError(
          absl::StrCat("--channels must be >= 1, got ", channels_));
    }

    std::vector<std::shared_ptr<grpc::Channel>> channels;
    for (int i = 0; i < channels_; ++i) {
      channels.push_back(MakeChannel(global, /*private_connection=*/true));
    }
    absl::StatusOr<PromptVocabulary> vocabulary =
        FetchVocabulary(global, channels.front());
    if (!vocabulary.ok()) return vocabulary.status();

    LoadGenerator generator(config_, *std::move(vocabulary),
                            std::move(channels));
    const LoadResult result = generator.Run();
    const nlohmann::ordered_json report =
        BenchReportToJson(config_, channels_, result);
    if (global.json) {
      absl::PrintF("%s\n", DumpJson(report));
    } else {
      absl::PrintF("%s", FormatBenchReport(report));
    }
    return BenchOutcome(result);
  }

 private:
  // Asks the server for the vocabulary and checks the prompt and generation
  // lengths against its limits, so that a wrong flag fails once, clearly.
  absl::StatusOr<PromptVocabulary> FetchVocabulary(
      const GlobalOptions& global,
      const std::shared_ptr<grpc::Channel>& channel) const {
    std::unique_ptr<v1::TextGeneration::Stub> stub =
        v1::TextGeneration::NewStub(channel);
    grpc::ClientContext context;
    ApplyTimeout(global, context);
    v1::GetModelInfoResponse info;
    grpc::Status status =
        stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
    if (!status.ok()) {
      absl::Status error = FromGrpcStatus(status);
      return absl::Status(error.code(),
                          absl::StrCat("GetModelInfo: ", error.message()));
    }
    const v1::ServerLimits& limits = info.limits();
    if (limits.max_prompt_tokens() > 0 &&
        config_.prompt_tokens > limits.max_prompt_tokens()) {
      return UsageError(
          absl::StrCat("--prompt-tokens ", config_.prompt_tokens,
                       " is above the server's max_prompt_tokens ",
                       limits.max_prompt_tokens()));
    }
    if (limits.max_new_tokens_limit() > 0 &&
        config_.max_new_tokens > limits.max_new_tokens_limit()) {
      return UsageError(
          absl::StrCat("--max-new-tokens ", config_.max_new_tokens,
                       " is above the server's max_new_tokens_limit ",
                       limits.max_new_tokens_limit()));
    }
    const v1::ModelConfig& model = info.model_config();
    PromptVocabulary vocabulary;
    vocabulary.n_vocab = model.n_vocab();
    vocabulary.eos_id = model.eos_id();
    vocabulary.special_ids = {model.eos_id(), model.pad_id(), model.unk_id()};
    if (vocabulary.n_vocab <= 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("the server reports n_vocab ", vocabulary.n_vocab));
    }
    return vocabulary;
  }

  LoadConfig config_;
  std::optional<int32_t> requests_;
  std::optional<uint64_t> seed_ = 1;
  int32_t channels_ = 1;
};

}  // namespace

std::unique_ptr<Command> MakeBenchCommand() {
  return std::make_unique<BenchCommand>();
}

}  // namespace tvq::client
