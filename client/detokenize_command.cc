#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "client/client_status.h"
#include "client/commands.h"
#include "client/input_text.h"
#include "client/proto_json.h"
#include "grpcpp/client_context.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::client {
namespace {

class DetokenizeCommand final : public Command {
 public:
  std::string name() const override { return "detokenize"; }
  std::string summary() const override {
    return "Token ids to text with the model's tokenizer.";
  }
  std::string synopsis() const override {
    return "detokenize [flags] ID[,ID...] [ID...]   (no ids reads stdin)";
  }
  std::string description() const override {
    return "Prints the text of the token ids given as arguments (commas "
           "and/or spaces between them), with --token-ids, or on stdin. "
           "Special tokens (pad, eos, unk) produce no text. With --json: "
           "{\"text\": \"...\"}.";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("token-ids", &token_ids_, "ID,ID,...",
              "Token ids to turn into text (may repeat).");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    std::vector<int32_t> ids = token_ids_;
    std::vector<std::string> sources = args;
    if (ids.empty() && sources.empty()) sources.push_back("-");
    for (const std::string& source : sources) {
      std::string text = source;
      if (source == "-") {
        absl::StatusOr<std::string> input = ReadFileOrStdin("-");
        if (!input.ok()) return input.status();
        text = *std::move(input);
      }
      absl::StatusOr<std::vector<int32_t>> parsed = ParseTokenIdList(text);
      if (!parsed.ok())
        return UsageError(std::string(parsed.status().message()));
      ids.insert(ids.end(), parsed->begin(), parsed->end());
    }
    v1::DetokenizeRequest request;
    request.mutable_token_ids()->Add(ids.begin(), ids.end());

    std::unique_ptr<v1::TextGeneration::Stub> stub =
        v1::TextGeneration::NewStub(MakeChannel(global));
    grpc::ClientContext context;
    ApplyTimeout(global, context);
    v1::DetokenizeResponse response;
    grpc::Status status = stub->Detokenize(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);

    if (global.json) {
      absl::PrintF("%s\n", DumpJson({{"text", response.text()}}));
    } else {
      std::fwrite(response.text().data(), 1, response.text().size(), stdout);
      std::fputc('\n', stdout);
    }
    return absl::OkStatus();
  }

 private:
  std::vector<int32_t> token_ids_;
};

}  // namespace

std::unique_ptr<Command> MakeDetokenizeCommand() {
  return std::make_unique<DetokenizeCommand>();
}

}  // namespace tvq::client
