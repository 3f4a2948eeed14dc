#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/client_status.h"
#include "client/commands.h"
#include "client/input_text.h"
#include "client/proto_json.h"
#include "grpcpp/client_context.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::client {
namespace {

// Appends one stream message to the whole result, so that streaming and
// unary calls print the same way.
void MergeStreamMessage(const v1::GenerateStreamResponse& message,
                        v1::GenerateResponse& result) {
  result.set_request_id(message.request_id());
  result.set_seed(message.seed());
  result.mutable_token_ids()->Add(message.token_ids().begin(),
                                  message.token_ids().end());
  result.mutable_text()->append(message.text());
  result.mutable_logprobs()->MergeFrom(message.logprobs());
  if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    result.set_finish_reason(message.finish_reason());
    result.set_matched_stop_sequence(message.matched_stop_sequence());
    result.set_matched_stop_token_id(message.matched_stop_token_id());
    *result.mutable_usage() = message.usage();
  }
}

nlohmann::ordered_json GenerateResultToJson(const v1::GenerateResponse& result,
                                            bool with_logprobs) {
  nlohmann::ordered_json out = {
      {"request_id", result.request_id()},
      {"text", result.text()},
      {"token_ids", result.token_ids()},
      {"finish_reason", FinishReasonName(result.finish_reason())},
      {"matched_stop_sequence", result.matched_stop_sequence()},
      {"matched_stop_token_id", result.matched_stop_token_id()},
      {"seed", result.seed()},
      {"usage", MessageToJson(result.usage())},
  };
  if (with_logprobs) out["logprobs"] = TokenLogprobsToJson(result.logprobs());
  return out;
}

// "length: 32 tokens generated, prompt 6 tokens, first token 12.3 ms,
// total 45.6 ms, seed 42, request abc".
std::string FinishSummary(const v1::GenerateResponse& result) {
  std::string reason = FinishReasonName(result.finish_reason());
  if (result.finish_reason() == v1::FINISH_REASON_STOP_SEQUENCE) {
    absl::StrAppend(&reason, " \"", result.matched_stop_sequence(), "\"");
  } else if (result.finish_reason() == v1::FINISH_REASON_STOP_TOKEN ||
             result.finish_reason() == v1::FINISH_REASON_EOS) {
    absl::StrAppend(&reason, " (token ", result.matched_stop_token_id(), ")");
  }
  const v1::Usage& usage = result.usage();
  return absl::StrFormat(
      "[%s: %d tokens generated, prompt %d tokens, queue %.1f ms, first token "
      "%.1f ms, total %.1f ms, seed %d, request %s]",
      reason, usage.generated_tokens(), usage.prompt_tokens(),
      usage.queue_time_seconds() * 1e3,
      usage.time_to_first_token_seconds() * 1e3,
      usage.total_time_seconds() * 1e3, result.seed(), result.request_id());
}

// One line per generated token: position, id, logprob and alternatives.
void PrintLogprobTable(const v1::GenerateResponse& result) {
  for (int i = 0; i < result.logprobs_size(); ++i) {
    const v1::TokenLogprob& logprob = result.logprobs(i);
    std::vector<std::string> top;
    for (const v1::TopLogprob& alternative : logprob.top_logprobs()) {
      top.push_back(absl::StrFormat("%d:%.4f", alternative.token_id(),
                                    alternative.logprob()));
    }
    absl::FPrintF(stderr, "%5d  %6d  %9.4f  %s\n", i, logprob.token_id(),
                  logprob.logprob(), absl::StrJoin(top, " "));
  }
}

class GenerateCommand final : public Command {
 public:
  std::string name() const override { return "generate"; }
  std::string summary() const override {
    return "Generate a continuation of a prompt (streams text as it comes).";
  }
  std::string synopsis() const override {
    return "generate [flags] PROMPT   (PROMPT \"-\" reads stdin)";
  }
  std::string description() const override {
    return "Generates a continuation of PROMPT and prints the text on stdout "
           "as it streams, then the finish reason and usage on stderr. The "
           "prompt can also come from --file or be given as token ids with "
           "--token-ids.\n\n"
           "Sampling and stopping flags that are not given leave the "
           "server's defaults in place. With --json, one JSON object with "
           "request_id, text, token_ids, finish_reason, "
           "matched_stop_sequence, matched_stop_token_id, seed, usage (and "
           "logprobs when asked) is printed at the end, the same for "
           "streaming and --no-stream.";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("file", &file_, "PATH",
              "Read the prompt text from PATH (\"-\" = stdin) instead of the "
              "PROMPT argument.");
    flags.Add("token-ids", &token_ids_, "ID,ID,...",
              "Prompt as token ids instead of text (comma-separated; may "
              "repeat).");
    flags.Add("no-eos-prefix", &no_eos_prefix_, "",
              "Feed the prompt as given; by default the model's eos_id is "
              "prepended.");
    flags.Add("no-stream", &no_stream_, "",
              "Use the unary Generate call: print the whole result at the "
              "end instead of streaming.");
    flags.AddSection("Sampling flags");
    flags.Add("temperature", &temperature_, "FLOAT",
              "Softmax temperature in [0, 100]; 0 = greedy decoding (server "
              "default 1).");
    flags.Add("top-k", &top_k_, "INT",
              "Keep only the K most likely tokens; 0 = no limit.");
    flags.Add("top-p", &top_p_, "FLOAT",
              "Nucleus sampling: keep the smallest set of most likely tokens "
              "whose probability reaches P; in (0, 1] (server default 1).");
    flags.Add("min-p", &min_p_, "FLOAT",
              "Drop tokens less likely than MIN_P times the most likely one; "
              "in [0, 1]; 0 = off.");
    flags.Add("repetition-penalty", &repetition_penalty_, "FLOAT",
              "Penalty on every token already seen, in (0, 10] (server "
              "default 1 = off).");
    flags.Add("presence-penalty", &presence_penalty_, "FLOAT",
              "Subtracted from the logit of every token already generated; "
              "in [-2, 2].");
    flags.Add("frequency-penalty", &frequency_penalty_, "FLOAT",
              "Subtracted, times its count, from the logit of every token "
              "already generated; in [-2, 2].");
    flags.Add("seed", &seed_, "UINT64",
              "Seed of the sampling generator; unset = the server picks one "
              "and reports it.");
    flags.AddSection("Stopping flags");
    flags.Add("max-new-tokens", &max_new_tokens_, "INT",
              "Most tokens to generate, in [1, server limit] (server default "
              "min(256, limit)).");
    flags.Add("stop", &stop_, "TEXT",
              "Stop when the generated text contains TEXT (not returned). "
              "Repeat for several sequences (at most 16).");
    flags.Add("stop-token-ids", &stop_token_ids_, "ID,ID,...",
              "Stop when one of these token ids is generated (at most 64).");
    flags.Add("ignore-eos", &ignore_eos_, "",
              "Do not stop at the model's eos_id.");
    flags.AddSection("Output flags");
    flags.Add("logprobs", &logprobs_, "N",
              "Return the logprob of every generated token and its N most "
              "likely alternatives (N in [0, 20]); printed on stderr, or in "
              "the JSON.");
    flags.Add("request-id", &request_id_, "ID",
              "Request id echoed by the server (up to 128 printable ASCII "
              "characters); unset = the server makes one.");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    v1::GenerateRequest request;
    if (!token_ids_.empty()) {
      if (!args.empty() || !file_.empty()) {
        return UsageError(
            "give the prompt as PROMPT, --file or --token-ids, not several");
      }
      request.mutable_token_ids()->mutable_ids()->Add(token_ids_.begin(),
                                                      token_ids_.end());
    } else {
      if (args.empty() && file_.empty()) {
        return UsageError("missing PROMPT (or --file / --token-ids)");
      }
      absl::StatusOr<std::string> text = ReadInputText(args, file_);
      if (!text.ok()) return text.status();
      request.set_text(*std::move(text));
    }
    FillRequest(request);

    std::unique_ptr<v1::TextGeneration::Stub> stub =
        v1::TextGeneration::NewStub(MakeChannel(global));
    grpc::ClientContext context;
    ApplyTimeout(global, context);
    v1::GenerateResponse result;
    if (no_stream_) {
      grpc::Status status = stub->Generate(&context, request, &result);
      if (!status.ok()) return FromGrpcStatus(status);
      if (!global.json)
        std::fwrite(result.text().data(), 1, result.text().size(), stdout);
    } else {
      std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader =
          stub->GenerateStream(&context, request);
      v1::GenerateStreamResponse message;
      while (reader->Read(&message)) {
        MergeStreamMessage(message, result);
        if (!global.json && !message.text().empty()) {
          std::fwrite(message.text().data(), 1, message.text().size(), stdout);
          std::fflush(stdout);
        }
      }
      grpc::Status status = reader->Finish();
      if (!status.ok()) {
        if (!global.json && !result.text().empty()) std::fputc('\n', stdout);
        return FromGrpcStatus(status);
      }
    }

    if (global.json) {
      absl::PrintF("%s\n", DumpJson(GenerateResultToJson(
                               result, logprobs_.has_value())));
      return absl::OkStatus();
    }
    if (!result.text().empty() && result.text().back() != '\n') {
      std::fputc('\n', stdout);
    }
    std::fflush(stdout);
    if (logprobs_.has_value()) PrintLogprobTable(result);
    absl::FPrintF(stderr, "%s\n", FinishSummary(result));
    return absl::OkStatus();
  }

 private:
  void FillRequest(v1::GenerateRequest& request) const {
    request.set_no_eos_prefix(no_eos_prefix_);
    if (temperature_.has_value()) request.set_temperature(*temperature_);
    request.set_top_k(top_k_);
    if (top_p_.has_value()) request.set_top_p(*top_p_);
    request.set_min_p(min_p_);
    if (repetition_penalty_.has_value()) {
      request.set_repetition_penalty(*repetition_penalty_);
    }
    request.set_presence_penalty(presence_penalty_);
    request.set_frequency_penalty(frequency_penalty_);
    if (seed_.has_value()) request.set_seed(*seed_);
    if (max_new_tokens_.has_value()) {
      request.set_max_new_tokens(*max_new_tokens_);
    }
    for (const std::string& stop : stop_) request.add_stop(stop);
    request.mutable_stop_token_ids()->Add(stop_token_ids_.begin(),
                                          stop_token_ids_.end());
    request.set_ignore_eos(ignore_eos_);
    if (logprobs_.has_value()) {
      request.set_logprobs(true);
      request.set_top_logprobs(*logprobs_);
    }
    request.set_request_id(request_id_);
  }

  std::string file_;
  std::vector<int32_t> token_ids_;
  bool no_eos_prefix_ = false;
  bool no_stream_ = false;
  std::optional<float> temperature_;
  int32_t top_k_ = 0;
  std::optional<float> top_p_;
  float min_p_ = 0;
  std::optional<float> repetition_penalty_;
  float presence_penalty_ = 0;
  float frequency_penalty_ = 0;
  std::optional<uint64_t> seed_;
  std::optional<int32_t> max_new_tokens_;
  std::vector<std::string> stop_;
  std::vector<int32_t> stop_token_ids_;
  bool ignore_eos_ = false;
  std::optional<int32_t> logprobs_;
  std::string request_id_;
};

}  // namespace

std::unique_ptr<Command> MakeGenerateCommand() {
  return std::make_unique<GenerateCommand>();
}

}  // namespace tvq::client
