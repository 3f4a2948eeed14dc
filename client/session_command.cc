// tvq-client session ACTION: create, append, generate, fork, export, import,
// get, list and close a session (docs/sessions.md). One command with the
// action as its first argument, so that every action shares the --id flag
// and the printing of a Session.
#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
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

constexpr size_t kChunkBytes = size_t{1} << 20;

std::string TierName(v1::SessionTier tier) {
  switch (tier) {
    case v1::SESSION_TIER_HOST:
      return "host";
    case v1::SESSION_TIER_SLOT:
      return "slot";
    case v1::SESSION_TIER_DISK:
      return "disk";
    default:
      return "unspecified";
  }
}

class SessionCommand final : public Command {
 public:
  std::string name() const override { return "session"; }
  std::string summary() const override {
    return "Create, continue, fork, export, import, list or close sessions";
  }
  std::string synopsis() const override {
    return "session ACTION [flags] [TEXT | FILE]";
  }
  std::string description() const override {
    return "A session keeps a sequence's constant-size state between "
           "requests (docs/sessions.md). ACTION is one of:\n\n"
           "create [TEXT]: a new session (--id, or the server makes one), "
           "optionally prefilled with TEXT or --token-ids; --ttl, --pinned.\n\n"
           "append TEXT: prefill more tokens into --id.\n\n"
           "generate [TEXT]: generate a continuation of --id (TEXT or "
           "--token-ids may be empty); the session then holds it. Prints the "
           "generated text (and, with --json, the response).\n\n"
           "fork: an independent copy of --id (--new-id, or the server makes "
           "one).\n\n"
           "export FILE: write --id's blob to FILE (\"-\" = stdout).\n\n"
           "import FILE: a new session from the blob in FILE (\"-\" = stdin), "
           "under --id or a server-made id.\n\n"
           "get, list, close: show one, show all, close --id.";
  }

  void DefineFlags(FlagSet& flags) override {
    flags.Add("id", &id_, "ID", "The session (new id for create and import)");
    flags.Add("new-id", &new_id_, "ID", "fork: the id of the copy");
    flags.Add("token-ids", &token_ids_, "IDS",
              "Token ids instead of TEXT (comma-separated)");
    flags.Add("no-eos-prefix", &no_eos_prefix_, "",
              "Do not prepend eos to the first tokens of an empty session");
    flags.Add("ttl", &ttl_seconds_, "SECONDS",
              "create: idle seconds before it expires (0 = server default)");
    flags.Add("pinned", &pinned_, "", "create: never evicted, never expires");
    flags.Add("max-new-tokens", &max_new_tokens_, "N",
              "generate: tokens to generate (server default when unset)");
    flags.Add("temperature", &temperature_, "FLOAT",
              "generate: softmax temperature (0 = greedy)");
    flags.Add("seed", &seed_, "N", "generate: sampling seed");
  }

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    if (args.empty()) return UsageError("missing ACTION");
    const std::string& action = args[0];
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    stub_ = v1::TextGeneration::NewStub(MakeChannel(global));
    global_ = &global;
    if (action == "create") return Create(rest);
    if (action == "append") return Append(rest);
    if (action == "generate") return Generate(rest);
    if (action == "fork") return Fork(rest);
    if (action == "export") return Export(rest);
    if (action == "import") return Import(rest);
    if (action == "get") return Get(rest);
    if (action == "list") return List(rest);
    if (action == "close") return Close(rest);
    return UsageError(absl::StrFormat(
        "unknown ACTION \"%s\" (create, append, generate, fork, export, "
        "import, get, list, close)",
        action));
  }

 private:
  absl::Status NeedId() const {
    if (id_.empty()) return UsageError("--id is required");
    return absl::OkStatus();
  }
  absl::Status NoArgs(const std::vector<std::string>& args) const {
    if (!args.empty()) return UsageError("unexpected argument " + args[0]);
    return absl::OkStatus();
  }
  // The prompt: --token-ids, or the text argument. Empty when neither and
  // `optional`.
  template <typename Request>
  absl::Status SetPrompt(const std::vector<std::string>& args, bool optional,
                         Request& request) const {
    if (!token_ids_.empty()) {
      if (!args.empty())
        return UsageError("give TEXT or --token-ids, not both");
      request.mutable_token_ids()->mutable_ids()->Add(token_ids_.begin(),
                                                      token_ids_.end());
      return absl::OkStatus();
    }
    if (args.empty()) {
      if (optional) return absl::OkStatus();
      return UsageError("missing TEXT (or --token-ids)");
    }
    if (args.size() > 1) return UsageError("give one TEXT argument");
    absl::StatusOr<std::string> text = ReadInputText(args, "");
    if (!text.ok()) return text.status();
    request.set_text(*text);
    return absl::OkStatus();
  }

  void Print(const v1::Session& session) const {
    if (global_->json) {
      absl::PrintF("%s\n", DumpJson(MessageToJson(session)));
      return;
    }
    absl::PrintF(
        "%s  position %d  state %d bytes  tier %s%s  expires_at %d  "
        "last_used %d\n",
        session.session_id(), session.position(), session.state_bytes(),
        TierName(session.tier()), session.pinned() ? "  pinned" : "",
        session.expires_at(), session.last_used());
  }

  absl::Status Finish(const grpc::Status& status, const v1::Session& session) {
    if (!status.ok()) return FromGrpcStatus(status);
    Print(session);
    return absl::OkStatus();
  }

  absl::Status Create(const std::vector<std::string>& args) {
    v1::CreateSessionRequest request;
    if (absl::Status status = SetPrompt(args, /*optional=*/true, request);
        !status.ok()) {
      return status;
    }
    request.set_session_id(id_);
    request.set_no_eos_prefix(no_eos_prefix_);
    request.set_ttl_seconds(ttl_seconds_);
    request.set_pinned(pinned_);
    v1::Session session;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    return Finish(stub_->CreateSession(&context, request, &session), session);
  }

  absl::Status Append(const std::vector<std::string>& args) {
    if (absl::Status status = NeedId(); !status.ok()) return status;
    v1::AppendToSessionRequest request;
    if (absl::Status status = SetPrompt(args, /*optional=*/false, request);
        !status.ok()) {
      return status;
    }
    request.set_session_id(id_);
    request.set_no_eos_prefix(no_eos_prefix_);
    v1::Session session;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    return Finish(stub_->AppendToSession(&context, request, &session), session);
  }

  absl::Status Generate(const std::vector<std::string>& args) {
    if (absl::Status status = NeedId(); !status.ok()) return status;
    v1::GenerateRequest request;
    if (absl::Status status = SetPrompt(args, /*optional=*/true, request);
        !status.ok()) {
      return status;
    }
    request.set_session_id(id_);
    request.set_no_eos_prefix(no_eos_prefix_);
    if (max_new_tokens_.has_value())
      request.set_max_new_tokens(*max_new_tokens_);
    if (temperature_.has_value()) request.set_temperature(*temperature_);
    if (seed_.has_value()) request.set_seed(*seed_);
    v1::GenerateResponse response;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    const grpc::Status status = stub_->Generate(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    if (global_->json) {
      absl::PrintF("%s\n", DumpJson(MessageToJson(response)));
    } else {
      absl::PrintF("%s\n", response.text());
    }
    return absl::OkStatus();
  }

  absl::Status Fork(const std::vector<std::string>& args) {
    if (absl::Status status = NoArgs(args); !status.ok()) return status;
    if (absl::Status status = NeedId(); !status.ok()) return status;
    v1::ForkSessionRequest request;
    request.set_session_id(id_);
    request.set_new_session_id(new_id_);
    v1::Session session;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    return Finish(stub_->ForkSession(&context, request, &session), session);
  }

  absl::Status Export(const std::vector<std::string>& args) {
    if (absl::Status status = NeedId(); !status.ok()) return status;
    if (args.size() != 1)
      return UsageError("export needs one FILE (\"-\" = stdout)");
    v1::ExportSessionRequest request;
    request.set_session_id(id_);
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    std::unique_ptr<grpc::ClientReader<v1::SessionChunk>> reader =
        stub_->ExportSession(&context, request);
    std::string blob;
    v1::SessionChunk chunk;
    while (reader->Read(&chunk)) blob += chunk.data();
    if (const grpc::Status status = reader->Finish(); !status.ok()) {
      return FromGrpcStatus(status);
    }
    if (args[0] == "-") {
      std::fwrite(blob.data(), 1, blob.size(), stdout);
      return absl::OkStatus();
    }
    // Write a temporary file and rename it, so a failed export never leaves
    // a partial blob under the name.
    const std::string temporary = args[0] + ".tmp";
    {
      std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
      out.write(blob.data(), static_cast<std::streamsize>(blob.size()));
      out.close();
      if (!out) {
        return absl::UnavailableError(
            absl::StrFormat("cannot write %s", temporary));
      }
    }
    if (std::rename(temporary.c_str(), args[0].c_str()) != 0) {
      return absl::UnavailableError(
          absl::StrFormat("cannot rename %s to %s", temporary, args[0]));
    }
    absl::FPrintF(stderr, "exported %s: %d bytes to %s\n", id_, blob.size(),
                  args[0]);
    return absl::OkStatus();
  }

  absl::Status Import(const std::vector<std::string>& args) {
    if (args.size() != 1)
      return UsageError("import needs one FILE (\"-\" = stdin)");
    absl::StatusOr<std::string> blob = ReadFileOrStdin(args[0]);
    if (!blob.ok()) return blob.status();
    v1::Session session;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    std::unique_ptr<grpc::ClientWriter<v1::SessionChunk>> writer =
        stub_->ImportSession(&context, &session);
    size_t offset = 0;
    bool first = true;
    while (first || offset < blob->size()) {
      v1::SessionChunk chunk;
      if (first) chunk.set_session_id(id_);
      chunk.set_data(blob->substr(offset, kChunkBytes));
      offset += kChunkBytes;
      first = false;
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return Finish(writer->Finish(), session);
  }

  absl::Status Get(const std::vector<std::string>& args) {
    if (absl::Status status = NoArgs(args); !status.ok()) return status;
    if (absl::Status status = NeedId(); !status.ok()) return status;
    v1::GetSessionRequest request;
    request.set_session_id(id_);
    v1::Session session;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    return Finish(stub_->GetSession(&context, request, &session), session);
  }

  absl::Status List(const std::vector<std::string>& args) {
    if (absl::Status status = NoArgs(args); !status.ok()) return status;
    v1::ListSessionsResponse response;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    const grpc::Status status =
        stub_->ListSessions(&context, v1::ListSessionsRequest(), &response);
    if (!status.ok()) return FromGrpcStatus(status);
    if (global_->json) {
      absl::PrintF("%s\n", DumpJson(MessageToJson(response)));
      return absl::OkStatus();
    }
    for (const v1::Session& session : response.sessions()) Print(session);
    return absl::OkStatus();
  }

  absl::Status Close(const std::vector<std::string>& args) {
    if (absl::Status status = NoArgs(args); !status.ok()) return status;
    if (absl::Status status = NeedId(); !status.ok()) return status;
    v1::CloseSessionRequest request;
    request.set_session_id(id_);
    v1::CloseSessionResponse response;
    grpc::ClientContext context;
    ApplyTimeout(*global_, context);
    const grpc::Status status =
        stub_->CloseSession(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    if (!global_->json)
      absl::PrintF("closed %s\n", id_);
    else
      absl::PrintF("{}\n");
    return absl::OkStatus();
  }

  std::string id_;
  std::string new_id_;
  std::vector<int32_t> token_ids_;
  bool no_eos_prefix_ = false;
  int64_t ttl_seconds_ = 0;
  bool pinned_ = false;
  std::optional<int32_t> max_new_tokens_;
  std::optional<float> temperature_;
  std::optional<uint64_t> seed_;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
  const GlobalOptions* global_ = nullptr;
};

}  // namespace

std::unique_ptr<Command> MakeSessionCommand() {
  return std::make_unique<SessionCommand>();
}

}  // namespace tvq::client
