#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "client/client_status.h"
#include "client/commands.h"
#include "client/proto_json.h"
#include "grpcpp/client_context.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::client {
namespace {

std::string TokenizerName(v1::TokenizerKind kind) {
  switch (kind) {
    case v1::TOKENIZER_KIND_BYTE:
      return "byte";
    case v1::TOKENIZER_KIND_SENTENCEPIECE:
      return "sentencepiece";
    default:
      return "unspecified";
  }
}

const char* YesNo(bool value) { return value ? "true" : "false"; }

std::string FormatBytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 20)) {
    return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  }
  if (bytes >= (int64_t{1} << 10)) {
    return absl::StrFormat("%.1f KiB", static_cast<double>(bytes) / (1 << 10));
  }
  return absl::StrFormat("%d bytes", bytes);
}

void PrintInfo(const v1::GetModelInfoResponse& info) {
  const v1::ModelConfig& config = info.model_config();
  const v1::ServerLimits& limits = info.limits();
  absl::PrintF("server     tvq-server %s, backend %s: %s\n",
               info.server_version(), info.backend(), info.device());
  absl::PrintF("model      %s (%s, %d parameters)\n", info.model_path(),
               info.weights_dtype(), info.num_parameters());
  absl::PrintF(
      "config     d_model %d, n_layer %d, n_head %d, d_k %d, d_v %d, n_code "
      "%d, block_len %d, mem_len %d, agg_cache %s, pe_abs %s, e_tie %s, "
      "e_preln %s, e_scale %g, n_vocab %d, eos %d, pad %d, unk %d\n",
      config.d_model(), config.n_layer(), config.n_head(), config.d_k(),
      config.d_v(), config.n_code(), config.block_len(), config.mem_len(),
      YesNo(config.agg_cache()), YesNo(config.pe_abs()), YesNo(config.e_tie()),
      YesNo(config.e_preln()), config.e_scale(), config.n_vocab(),
      config.eos_id(), config.pad_id(), config.unk_id());
  absl::PrintF("tokenizer  %s, %d ids\n", TokenizerName(info.tokenizer_kind()),
               info.vocab_size());
  absl::PrintF(
      "slots      %d (%d free, %d busy), %d requests queued, %s of state per "
      "sequence\n",
      info.num_slots(), info.free_slots(), info.busy_slots(),
      info.queued_requests(), FormatBytes(info.state_bytes_per_sequence()));
  absl::PrintF(
      "limits     max_prompt_tokens %d, max_new_tokens %d (default %d), "
      "max_queue %d, stop sequences %d of up to %d bytes, stop token ids %d, "
      "top_logprobs %d\n",
      limits.max_prompt_tokens(), limits.max_new_tokens_limit(),
      limits.default_max_new_tokens(), limits.max_queue(),
      limits.max_stop_sequences(), limits.max_stop_sequence_bytes(),
      limits.max_stop_token_ids(), limits.max_top_logprobs());
  absl::PrintF(
      "transport  max_request_bytes %d, max_pending_output_bytes %d, "
      "max_connections %d%s, max_concurrent_streams %d per connection, "
      "max_detokenize_tokens %d\n",
      limits.max_request_bytes(), limits.max_pending_output_bytes(),
      limits.max_connections(), limits.max_connections() == 0 ? " (no cap)" : "",
      limits.max_concurrent_streams(), limits.max_detokenize_tokens());
  absl::PrintF(
      "sessions   max_sessions %d (session_memory_bytes %d), ttl %ds by "
      "default, at most %ds, max_sessions_per_key %d%s\n",
      limits.max_sessions(), limits.session_memory_bytes(),
      limits.session_default_ttl_seconds(), limits.session_max_ttl_seconds(),
      limits.max_sessions_per_key(),
      limits.max_sessions_per_key() == 0 ? " (no limit)" : "");
}

class InfoCommand final : public Command {
 public:
  std::string name() const override { return "info"; }
  std::string summary() const override {
    return "The loaded model, tokenizer, slots, backend and server limits.";
  }
  std::string synopsis() const override { return "info [flags]"; }
  std::string description() const override {
    return "Prints what GetModelInfo returns: the model directory and "
           "config, the tokenizer, the state slots and their occupancy, the "
           "backend and device, the server version and its request limits. "
           "With --json: every field of GetModelInfoResponse under its proto "
           "name (enums by name).";
  }

  void DefineFlags(FlagSet&) override {}

  absl::Status Run(const GlobalOptions& global,
                   const std::vector<std::string>& args) override {
    if (!args.empty()) {
      return UsageError(
          absl::StrFormat("info takes no arguments, got \"%s\"", args[0]));
    }
    std::unique_ptr<v1::TextGeneration::Stub> stub =
        v1::TextGeneration::NewStub(MakeChannel(global));
    grpc::ClientContext context;
    ApplyTimeout(global, context);
    v1::GetModelInfoResponse response;
    grpc::Status status =
        stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &response);
    if (!status.ok()) return FromGrpcStatus(status);
    if (global.json) {
      absl::PrintF("%s\n", DumpJson(MessageToJson(response)));
    } else {
      PrintInfo(response);
    }
    return absl::OkStatus();
  }
};

}  // namespace

std::unique_ptr<Command> MakeInfoCommand() {
  return std::make_unique<InfoCommand>();
}

}  // namespace tvq::client
