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

class TokenizeCommand final : public Command {
 public:
  std::string name() const override { return "tokenize"; }
  std::string summary() const override {
    return "Text to token ids with the model's tokenizer.";
  }
  std::string synopsis() const override {
    return "tokenize [flags] [TEXT]   (no TEXT or \"-\" reads stdin)";
  }
  std::string description() const override {
    return "Prints the token ids of TEXT (or of --file, or stdin) on one "
           "line, comma-separated, ready for --token-ids. The model's eos_id "
           "is prepended, as generate and score do, unless --no-eos-prefix. "
           "With --json: {\"token_ids\": [...]}.";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("file", &file_, "PATH",
              "Read the text from PATH (\"-\" = stdin).");
    flags.Add("no-eos-prefix", &no_eos_prefix_, "", "Do not prepend eos_id.");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    absl::StatusOr<std::string> text = ReadInputText(args, file_);
    if (!text.ok()) return text.status();
    v1::TokenizeRequest request;
    request.set_text(*std::move(text));
    request.set_no_eos_prefix(no_eos_prefix_);

    std::unique_ptr<v1::TextGeneration::Stub> stub =
        v1::TextGeneration::NewStub(MakeChannel(global));
    grpc::ClientContext context;
    ApplyTimeout(global, context);
    v1::TokenizeResponse response;
    grpc::Status status = stub->Tokenize(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);

    if (global.json) {
      absl::PrintF("%s\n", DumpJson({{"token_ids", response.token_ids()}}));
    } else {
      absl::PrintF("%s\n", absl::StrJoin(response.token_ids(), ","));
    }
    return absl::OkStatus();
  }

 private:
  std::string file_;
  bool no_eos_prefix_ = false;
};

}  // namespace

std::unique_ptr<Command> MakeTokenizeCommand() {
  return std::make_unique<TokenizeCommand>();
}

}  // namespace tvq::client
