#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
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

// The JSON the issue and docs/client.md define: entry i scores input token
// i + 1 given tokens 0..i.
nlohmann::ordered_json ScoreToJson(const v1::ScoreResponse& response) {
  nlohmann::ordered_json out = {
      {"tokens", TokenLogprobsToJson(response.token_logprobs())},
      {"total_logprob", response.total_logprob()},
      {"bits_per_byte", nullptr},
  };
  if (response.has_bits_per_byte()) {
    out["bits_per_byte"] = response.bits_per_byte();
  }
  return out;
}

void PrintScoreTable(const v1::ScoreResponse& response) {
  absl::PrintF("%5s  %6s  %10s  %s\n", "pos", "token", "logprob",
               "top alternatives (id:logprob)");
  for (int i = 0; i < response.token_logprobs_size(); ++i) {
    const v1::TokenLogprob& logprob = response.token_logprobs(i);
    std::vector<std::string> top;
    for (const v1::TopLogprob& alternative : logprob.top_logprobs()) {
      top.push_back(absl::StrFormat("%d:%.4f", alternative.token_id(),
                                    alternative.logprob()));
    }
    absl::PrintF("%5d  %6d  %10.4f  %s\n", i + 1, logprob.token_id(),
                 logprob.logprob(), absl::StrJoin(top, " "));
  }
  const int scored = response.token_logprobs_size();
  absl::PrintF("total_logprob %.6f over %d scored tokens",
               response.total_logprob(), scored);
  if (scored > 0) {
    absl::PrintF(", perplexity %.4f",
                 std::exp(-response.total_logprob() / scored));
  }
  if (response.has_bits_per_byte()) {
    absl::PrintF(", bits_per_byte %.4f", response.bits_per_byte());
  }
  absl::PrintF("\n");
}

class ScoreCommand final : public Command {
 public:
  std::string name() const override { return "score"; }
  std::string summary() const override {
    return "Log-probability of every token of a text or id sequence.";
  }
  std::string synopsis() const override {
    return "score [flags] [TEXT]   (no TEXT or \"-\" reads stdin)";
  }
  std::string description() const override {
    return "Scores a sequence with teacher forcing: the logprob of each "
           "token given the tokens before it. The sequence is TEXT, the "
           "content of --file, stdin, or token ids from --token-ids. By "
           "default the model's eos_id is prepended so the first real token "
           "is scored too; --no-eos-prefix scores the ids exactly as given "
           "(the first one is then context only).\n\n"
           "Text output: one line per scored position (position in the "
           "sequence, token id, logprob, alternatives), then the total, the "
           "perplexity and, for byte models, bits per byte. With --json: "
           "{\"tokens\": [{\"id\", \"logprob\", \"top\": [{\"id\", "
           "\"logprob\"}, ...]}, ...], \"total_logprob\", \"bits_per_byte\" "
           "(null unless a byte model)}, where entry i scores input token "
           "i + 1 given tokens 0..i.";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("file", &file_, "PATH",
              "Read the text from PATH (\"-\" = stdin).");
    flags.Add("token-ids", &token_ids_, "ID,ID,...",
              "Score these token ids instead of text (comma-separated; may "
              "repeat).");
    flags.Add("no-eos-prefix", &no_eos_prefix_, "",
              "Score the sequence as given; by default eos_id is prepended.");
    flags.Add("top-logprobs", &top_logprobs_, "N",
              "Also return the N most likely alternatives at each position "
              "(N in [0, 20]).");
    flags.Add("request-id", &request_id_, "ID",
              "Request id echoed by the server.");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    v1::ScoreRequest request;
    if (!token_ids_.empty()) {
      if (!args.empty() || !file_.empty()) {
        return UsageError(
            "give the sequence as TEXT, --file or --token-ids, not several");
      }
      request.mutable_token_ids()->mutable_ids()->Add(token_ids_.begin(),
                                                      token_ids_.end());
    } else {
      absl::StatusOr<std::string> text = ReadInputText(args, file_);
      if (!text.ok()) return text.status();
      request.set_text(*std::move(text));
    }
    request.set_no_eos_prefix(no_eos_prefix_);
    request.set_top_logprobs(top_logprobs_);
    request.set_request_id(request_id_);

    std::unique_ptr<v1::TextGeneration::Stub> stub =
        v1::TextGeneration::NewStub(MakeChannel(global));
    grpc::ClientContext context;
    ApplyTimeout(global, context);
    v1::ScoreResponse response;
    grpc::Status status = stub->Score(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);

    if (global.json) {
      absl::PrintF("%s\n", DumpJson(ScoreToJson(response)));
    } else {
      PrintScoreTable(response);
    }
    return absl::OkStatus();
  }

 private:
  std::string file_;
  std::vector<int32_t> token_ids_;
  bool no_eos_prefix_ = false;
  int32_t top_logprobs_ = 0;
  std::string request_id_;
};

}  // namespace

std::unique_ptr<Command> MakeScoreCommand() {
  return std::make_unique<ScoreCommand>();
}

}  // namespace tvq::client
