// tvq-server: serves one Transformer-VQ model over gRPC (tvq.v1.TextGeneration,
// grpc.health.v1.Health, server reflection) and, with --http-listen, over
// the OpenAI-compatible HTTP API (server/service/http, docs/http.md).
//
// Start-up: parse and check flags, turn them into a core::EngineConfig
// (no flag is read anywhere else), start listening (health NOT_SERVING,
// calls UNAVAILABLE while loading), load the model, build the scheduler, go
// SERVING. SIGTERM/SIGINT: NOT_SERVING, new requests UNAVAILABLE, in-flight
// requests finish for up to --drain-timeout, sessions migrate (--drain-peer,
// --session-dir), exit 0. SIGHUP re-reads --api-keys-file and the TLS files
// (docs/security.md).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/auth/api_key_store.h"
#include "server/auth/tls_certificates.h"
#include "server/auth/tls_files.h"
#include "server/core/engine.h"
#include "server/core/engine_config.h"
#include "server/core/model_info.h"
#include "server/core/readiness.h"
#include "server/metrics/auth_metrics.h"
#include "server/metrics/http_metrics.h"
#include "server/metrics/metrics.h"
#include "server/metrics/metrics_exposer.h"
#include "server/metrics/scheduler_metrics_observer.h"
#include "server/process/resource_limits.h"
#include "server/process/stop_signals.h"
#include "server/scheduler/scheduler.h"
#include "server/service/grpc/generation_service.h"
#include "server/service/grpc/peer_session_importer.h"
#include "server/service/grpc/grpc_credentials.h"
#include "server/service/grpc/rpc_metrics_interceptor.h"
#include "server/service/grpc/server_options.h"
#include "server/service/http/api_key_gate.h"
#include "server/service/http/chat_template.h"
#include "server/service/http/http_server.h"
#include "server/service/http/openai_routes.h"

#ifndef TVQ_VERSION
#define TVQ_VERSION "0.0.0"
#endif

ABSL_FLAG(std::string, model, "models/demo",
          "Model directory: config.json, model.safetensors and, for "
          "SentencePiece models, the tokenizer file");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address HOST:PORT (port 0 = pick a free port; the "
          "chosen address is logged)");
ABSL_FLAG(std::string, metrics_address, "127.0.0.1:9464",
          "Prometheus metrics listen address HOST:PORT (empty = no metrics "
          "endpoint)");
ABSL_FLAG(std::string, device, "auto",
          "Compute device: auto (CUDA when built in and a GPU is usable, else "
          "CPU), cpu, cuda or cuda:N");
ABSL_FLAG(int, threads, 0, "CPU backend threads (0 = all cores)");
ABSL_FLAG(int, num_slots, 0,
          "State slots = sequences processed at once (0 = derive from "
          "--state-memory-bytes, at most 256)");
ABSL_FLAG(int64_t, state_memory_bytes, int64_t{1} << 30,
          "Memory for the decode states when --num-slots=0: slots = this / "
          "bytes per slot (GetModelInfo reports the size)");
ABSL_FLAG(int, max_queue, 256,
          "Requests that may wait for a free slot; when that many wait, new "
          "requests fail at once with RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_new_tokens_limit, 8192,
          "Largest max_new_tokens a request may ask for");
ABSL_FLAG(int, default_max_new_tokens, 256,
          "max_new_tokens of requests that set none (capped by "
          "--max-new-tokens-limit)");
ABSL_FLAG(int, max_prompt_tokens, 131072,
          "Largest prompt or scored sequence, in tokens (eos prefix "
          "included)");
ABSL_FLAG(int, prefill_chunk, 256,
          "Prompt tokens one slot feeds per step (rounded down to a multiple "
          "of the block length); long prompts are cut into chunks of this "
          "size, interleaved with decode steps");
ABSL_FLAG(int, step_token_budget, 512,
          "Tokens (decode + prefill) one scheduler step aims not to exceed; "
          "decode tokens always run, prefill chunks fill the rest");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "On SIGTERM/SIGINT, how long in-flight requests may run before they "
          "are cut short (e.g. 30s, 2m)");
ABSL_FLAG(int, block_len, 0,
          "Prefill block length in tokens (0 = the model's block_len)");
ABSL_FLAG(std::string, weights_dtype, "f32",
          "f32 or bf16: the dtype the weight matrices (projections, "
          "embeddings, output head) are kept in; bf16 halves the bytes a "
          "decode step reads, arithmetic stays float32");
ABSL_FLAG(std::string, state_dtype, "f32",
          "f32 or bf16: the dtype of each sequence's state (code means and "
          "window values; counts stay float32); bf16 halves the state");
ABSL_FLAG(int64_t, session_memory_bytes, int64_t{4} << 30,
          "Host memory all sessions' saved states may take together; each "
          "session is charged one state (docs/sessions.md)");
ABSL_FLAG(absl::Duration, session_ttl, absl::Hours(1),
          "How long an idle session lives when CreateSession sets no "
          "ttl_seconds (e.g. 1h, 30m)");
ABSL_FLAG(absl::Duration, session_max_ttl, absl::Hours(24 * 30),
          "Longest ttl_seconds a session may ask for");
ABSL_FLAG(int64_t, max_sessions_per_key, 0,
          "Sessions one API key may hold on this server at once (created, "
          "forked, imported, or stored HTTP responses); past it they are "
          "RESOURCE_EXHAUSTED. 0 = no limit; needs --api-keys-file "
          "(docs/security.md)");
ABSL_FLAG(bool, prefix_reuse, true,
          "Automatic prefix reuse: a Generate without a session resumes from "
          "the longest retained end-of-request state its prompt begins with "
          "(within --session-memory-bytes); false turns it off");
ABSL_FLAG(std::string, session_dir, "",
          "Disk tier of sessions: evicted sessions are saved here instead of "
          "dropped, every session is saved at shutdown, and a restarted "
          "server with the same model lists and continues them (empty = off)");
ABSL_FLAG(std::string, drain_peer, "",
          "Migration on drain: on SIGTERM, push every session held in memory "
          "to the tvq-server at HOST:PORT (its ImportSession); a session the "
          "peer does not take goes to --session-dir (empty = no peer: "
          "sessions go to --session-dir)");
ABSL_FLAG(absl::Duration, drain_peer_timeout, absl::Seconds(10),
          "Deadline of each session's push to --drain-peer; after a push "
          "finds the peer unreachable the rest go to --session-dir");
ABSL_FLAG(std::string, drain_peer_tls_ca, "",
          "PEM CA bundle that signed --drain-peer's certificate: the push "
          "goes over TLS (a peer started with --tls-cert)");
ABSL_FLAG(std::string, drain_peer_tls_cert, "",
          "PEM client certificate for a peer with --tls-client-ca (mutual "
          "TLS); with --drain-peer-tls-key and --drain-peer-tls-ca");
ABSL_FLAG(std::string, drain_peer_tls_key, "",
          "PEM private key of --drain-peer-tls-cert");
ABSL_FLAG(std::string, drain_peer_api_key_file, "",
          "File whose first line is the API key the push presents "
          "(\"authorization: Bearer KEY\") to a peer with --api-keys-file");

// ---- Connections and request size (issue 15, docs/security.md).
ABSL_FLAG(int, max_connections, 1024,
          "gRPC connections open at once; more are closed as they arrive "
          "(0 = no cap)");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::Seconds(10),
          "A gRPC connection that has not completed the HTTP/2 handshake "
          "(preface + SETTINGS) within this is closed");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(5),
          "A gRPC connection with no call for this long gets GOAWAY and is "
          "closed (inf = never)");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Minutes(2),
          "The server pings a gRPC connection quiet for this long (and closes "
          "it when the ping is not answered within --keepalive-timeout)");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20),
          "How long a keepalive ping may go unanswered before the connection "
          "is closed");
ABSL_FLAG(int, max_concurrent_streams, 1024,
          "Calls one gRPC connection may have open at once (more wait on the "
          "client side)");
ABSL_FLAG(int64_t, max_request_bytes, int64_t{64} << 20,
          "Largest request message in bytes (gRPC max receive message size; "
          "the HTTP front end's body limit too)");
ABSL_FLAG(int64_t, max_pending_output_bytes, int64_t{4} << 20,
          "Output one stream may hold unsent because its client does not "
          "read; past it the stream ends with RESOURCE_EXHAUSTED");
// ---- end of the connection flags.

// ---- HTTP front end (OpenAI-compatible API, docs/http.md)
ABSL_FLAG(
    std::string, http_listen, "",
    "OpenAI-compatible HTTP API listen address HOST:PORT (/v1/completions, "
    "/v1/chat/completions, /v1/models, /tokenize, /detokenize, /health); "
    "port 0 = pick a free port; empty = no HTTP API");
ABSL_FLAG(std::string, served_model_name, "",
          "The model name of the HTTP API (requests' \"model\", /v1/models); "
          "empty = the model directory's name");
// ---- end HTTP front end

// ---- Security: TLS and API keys (docs/security.md)
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain (leaf first) of the gRPC and HTTP listeners; "
          "with --tls-key they serve TLS only (empty = plaintext). The "
          "metrics port stays plaintext. --tls-cert, --tls-key and "
          "--tls-client-ca are re-read on SIGHUP (new connections)");
ABSL_FLAG(std::string, tls_key, "",
          "PEM private key (unencrypted) of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate(s): mutual TLS, every gRPC and HTTP client must "
          "present a certificate this CA signed (needs --tls-cert)");
ABSL_FLAG(std::string, api_keys_file, "",
          "File of API keys, one per line (plain, or sha256:HEX of the key; "
          "'#' comments); every gRPC call and HTTP request must then send "
          "\"authorization: Bearer KEY\". Re-read on SIGHUP (empty = no "
          "keys)");
ABSL_FLAG(bool, auth_exempt_health, false,
          "With --api-keys-file: grpc.health.v1.Health and HTTP GET /health "
          "answer without a key");
// ---- end security

namespace {

constexpr char kServiceName[] = "tvq.v1.TextGeneration";
constexpr int kMaxSlots = 65536;
constexpr int kMaxThreads = 1024;

template <typename... Args>
void Log(const absl::FormatSpec<Args...>& format, const Args&... args) {
  absl::FPrintF(stderr, "%s tvq-server: %s\n",
                absl::FormatTime("%Y-%m-%dT%H:%M:%E3S", absl::Now(),
                                 absl::LocalTimeZone()),
                absl::StrFormat(format, args...));
  std::fflush(stderr);
}

// absl flags are spelled with underscores; accept the documented dashed
// spelling too (--metrics-address = --metrics_address) by rewriting the
// name part of each "--name[=value]" argument.
std::vector<char*> NormalizeFlagNames(int argc, char** argv,
                                      std::vector<std::string>& storage) {
  storage.assign(argv, argv + argc);
  for (int i = 1; i < argc; ++i) {
    std::string& arg = storage[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    const size_t name_begin = arg.find_first_not_of('-');
    const size_t name_end = std::min(arg.find('='), arg.size());
    if (name_begin == std::string::npos) continue;
    std::replace(arg.begin() + name_begin, arg.begin() + name_end, '-', '_');
  }
  std::vector<char*> pointers;
  for (std::string& arg : storage) pointers.push_back(arg.data());
  pointers.push_back(nullptr);
  return pointers;
}

// The connection flags' ranges (the first problem, naming the flag).
absl::Status CheckConnectionFlags() {
  absl::Status status;
  if (absl::GetFlag(FLAGS_max_connections) < 0) {
    status.Update(absl::InvalidArgumentError(
        absl::StrFormat("--max-connections must be >= 0 (0 = no cap), got %d",
                        absl::GetFlag(FLAGS_max_connections))));
  }
  if (const int streams = absl::GetFlag(FLAGS_max_concurrent_streams);
      streams < 1) {
    status.Update(absl::InvalidArgumentError(absl::StrFormat(
        "--max-concurrent-streams must be >= 1, got %d", streams)));
  }
  const std::pair<const char*, absl::Duration> durations[] = {
      {"handshake-timeout", absl::GetFlag(FLAGS_handshake_timeout)},
      {"max-connection-idle", absl::GetFlag(FLAGS_max_connection_idle)},
      {"keepalive-time", absl::GetFlag(FLAGS_keepalive_time)},
      {"keepalive-timeout", absl::GetFlag(FLAGS_keepalive_timeout)},
  };
  for (const auto& [flag, value] : durations) {
    if (value < absl::Milliseconds(1)) {
      status.Update(absl::InvalidArgumentError(
          absl::StrFormat("--%s must be at least 1ms, got %s", flag,
                          absl::FormatDuration(value))));
    }
  }
  if (const int64_t pending = absl::GetFlag(FLAGS_max_pending_output_bytes);
      pending < 4096 || pending > (int64_t{1} << 32)) {
    status.Update(absl::InvalidArgumentError(absl::StrFormat(
        "--max-pending-output-bytes must be in [4096, 4294967296], got %d",
        pending)));
  }
  const int64_t request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (request_bytes < 1024 || request_bytes > (int64_t{1} << 30)) {
    status.Update(absl::InvalidArgumentError(absl::StrFormat(
        "--max-request-bytes must be in [1024, 1073741824], got %d",
        request_bytes)));
  }
  return status;
}

// The connection flags, once.
tvq::service::ConnectionOptions ConnectionOptionsFromFlags() {
  tvq::service::ConnectionOptions options;
  options.max_connections = absl::GetFlag(FLAGS_max_connections);
  options.handshake_timeout = absl::GetFlag(FLAGS_handshake_timeout);
  options.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  return options;
}

// Checks the flags that have a range; returns the first problem, naming the
// flag.
absl::Status CheckFlags() {
  auto at_least = [](const char* flag, int64_t value,
                     int64_t minimum) -> absl::Status {
    if (value >= minimum) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s must be >= %d, got %d", flag, minimum, value));
  };
  absl::Status status;
  status.Update(at_least("threads", absl::GetFlag(FLAGS_threads), 0));
  if (absl::GetFlag(FLAGS_threads) > kMaxThreads) {
    status.Update(absl::InvalidArgumentError(
        absl::StrFormat("--threads must be <= %d, got %d", kMaxThreads,
                        absl::GetFlag(FLAGS_threads))));
  }
  status.Update(at_least("num-slots", absl::GetFlag(FLAGS_num_slots), 0));
  if (absl::GetFlag(FLAGS_num_slots) > kMaxSlots) {
    status.Update(absl::InvalidArgumentError(
        absl::StrFormat("--num-slots must be <= %d, got %d", kMaxSlots,
                        absl::GetFlag(FLAGS_num_slots))));
  }
  status.Update(at_least("state-memory-bytes",
                         absl::GetFlag(FLAGS_state_memory_bytes), 1));
  status.Update(at_least("max-queue", absl::GetFlag(FLAGS_max_queue), 1));
  status.Update(at_least("max-new-tokens-limit",
                         absl::GetFlag(FLAGS_max_new_tokens_limit), 1));
  status.Update(at_least("default-max-new-tokens",
                         absl::GetFlag(FLAGS_default_max_new_tokens), 1));
  status.Update(
      at_least("max-prompt-tokens", absl::GetFlag(FLAGS_max_prompt_tokens), 2));
  status.Update(
      at_least("prefill-chunk", absl::GetFlag(FLAGS_prefill_chunk), 1));
  status.Update(
      at_least("step-token-budget", absl::GetFlag(FLAGS_step_token_budget), 1));
  status.Update(at_least("block-len", absl::GetFlag(FLAGS_block_len), 0));
  for (const auto& [name, value] :
       {std::pair<const char*, std::string>{"weights-dtype",
                                            absl::GetFlag(FLAGS_weights_dtype)},
        std::pair<const char*, std::string>{"state-dtype",
                                            absl::GetFlag(FLAGS_state_dtype)}}) {
    if (value != "f32" && value != "bf16") {
      status.Update(absl::InvalidArgumentError(absl::StrFormat(
          "--%s must be f32 or bf16, got \"%s\"", name, value)));
    }
  }
  if (absl::GetFlag(FLAGS_drain_timeout) < absl::ZeroDuration()) {
    status.Update(absl::InvalidArgumentError(absl::StrFormat(
        "--drain-timeout must be >= 0, got %s",
        absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)))));
  }
  status.Update(at_least("session-memory-bytes",
                         absl::GetFlag(FLAGS_session_memory_bytes), 1));
  status.Update(at_least("max-sessions-per-key",
                         absl::GetFlag(FLAGS_max_sessions_per_key), 0));
  if (absl::GetFlag(FLAGS_max_sessions_per_key) > 0 &&
      absl::GetFlag(FLAGS_api_keys_file).empty()) {
    status.Update(absl::InvalidArgumentError(
        "--max-sessions-per-key counts sessions per API key: it needs "
        "--api-keys-file"));
  }
  if (absl::GetFlag(FLAGS_session_ttl) < absl::Seconds(1) ||
      absl::GetFlag(FLAGS_session_ttl) > absl::GetFlag(FLAGS_session_max_ttl)) {
    status.Update(absl::InvalidArgumentError(absl::StrFormat(
        "--session-ttl must be in [1s, --session-max-ttl=%s], got %s",
        absl::FormatDuration(absl::GetFlag(FLAGS_session_max_ttl)),
        absl::FormatDuration(absl::GetFlag(FLAGS_session_ttl)))));
  }
  if (absl::GetFlag(FLAGS_listen).empty()) {
    status.Update(absl::InvalidArgumentError(
        "--listen must be HOST:PORT, got an empty string"));
  }
  status.Update(CheckConnectionFlags());
  if (const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);
      !metrics_address.empty()) {
    absl::StatusOr<tvq::metrics::HostPort> parsed =
        tvq::metrics::ParseHostPort(metrics_address);
    if (!parsed.ok()) {
      status.Update(absl::InvalidArgumentError(
          absl::StrCat("--metrics-address: ", parsed.status().message())));
    }
  }
  if (absl::GetFlag(FLAGS_model).empty()) {
    status.Update(
        absl::InvalidArgumentError("--model must name a model directory"));
  }
  return status;
}

// The engine's configuration: every flag CheckFlags accepted, once.
// The key of --drain-peer-api-key-file ("" when the flag is empty); errors
// name the flag and file, never the key.
absl::StatusOr<std::string> ReadPeerKey() {
  const std::string key_file = absl::GetFlag(FLAGS_drain_peer_api_key_file);
  if (key_file.empty()) return std::string();
  return tvq::auth::ReadClientKeyFile("drain-peer-api-key-file", key_file);
}

// The credentials of --drain-peer, from the files the flags name (at start,
// and again at the drain's first push); errors name the flag and file,
// never the key.
absl::StatusOr<tvq::service::PeerCredentials> LoadPeerCredentials() {
  tvq::service::PeerCredentials credentials;
  absl::StatusOr<std::optional<tvq::auth::ClientTlsMaterial>> tls =
      tvq::auth::LoadClientTlsMaterial(
          {"drain-peer-", absl::GetFlag(FLAGS_drain_peer_tls_ca),
           absl::GetFlag(FLAGS_drain_peer_tls_cert),
           absl::GetFlag(FLAGS_drain_peer_tls_key)});
  if (!tls.ok()) return tls.status();
  credentials.tls = *std::move(tls);
  absl::StatusOr<std::string> key = ReadPeerKey();
  if (!key.ok()) return key.status();
  credentials.api_key = *std::move(key);
  return credentials;
}

tvq::core::EngineConfig EngineConfigFromFlags() {
  tvq::core::EngineConfig config;
  config.model_dir = absl::GetFlag(FLAGS_model);
  config.device = absl::GetFlag(FLAGS_device);
  config.threads = absl::GetFlag(FLAGS_threads);
  config.num_slots = absl::GetFlag(FLAGS_num_slots);
  config.state_memory_bytes = absl::GetFlag(FLAGS_state_memory_bytes);
  config.max_queue = absl::GetFlag(FLAGS_max_queue);
  config.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  config.step_token_budget = absl::GetFlag(FLAGS_step_token_budget);
  config.block_len = absl::GetFlag(FLAGS_block_len);
  config.weights_dtype = absl::GetFlag(FLAGS_weights_dtype) == "bf16"
                             ? tvq::runtime::DType::kBF16
                             : tvq::runtime::DType::kF32;
  config.state_dtype = absl::GetFlag(FLAGS_state_dtype) == "bf16"
                           ? tvq::runtime::DType::kBF16
                           : tvq::runtime::DType::kF32;
  config.limits.max_new_tokens_limit =
      absl::GetFlag(FLAGS_max_new_tokens_limit);
  config.limits.default_max_new_tokens =
      absl::GetFlag(FLAGS_default_max_new_tokens);
  config.limits.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  config.limits.max_pending_output_bytes =
      absl::GetFlag(FLAGS_max_pending_output_bytes);
  config.limits.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  config.limits.max_connections = absl::GetFlag(FLAGS_max_connections);
  config.limits.max_concurrent_streams =
      absl::GetFlag(FLAGS_max_concurrent_streams);
  config.sessions.memory_bytes = absl::GetFlag(FLAGS_session_memory_bytes);
  config.sessions.default_ttl_seconds =
      absl::ToInt64Seconds(absl::GetFlag(FLAGS_session_ttl));
  config.sessions.max_ttl_seconds =
      absl::ToInt64Seconds(absl::GetFlag(FLAGS_session_max_ttl));
  config.sessions.dir = absl::GetFlag(FLAGS_session_dir);
  config.sessions.prefix_reuse = absl::GetFlag(FLAGS_prefix_reuse);
  config.sessions.max_per_key = absl::GetFlag(FLAGS_max_sessions_per_key);
  return config;
}

// The tvq_model_info labels of the loaded model.
tvq::metrics::ModelInfo DescribeModel(const tvq::core::ModelInfo& model) {
  const tvq::runtime::ModelConfig& config = model.config;
  tvq::metrics::ModelInfo info;
  info.path = model.path;
  info.name = model.name;
  info.weights_dtype = model.weights_dtype;
  info.tokenizer = tvq::core::TokenizerKindName(model.tokenizer_kind);
  info.num_parameters = model.num_parameters;
  info.n_vocab = config.n_vocab;
  info.d_model = config.d_model;
  info.n_layer = config.n_layer;
  info.n_head = config.n_head;
  info.n_code = config.n_code;
  info.block_len = config.block_len;
  info.mem_len = config.mem_len;
  return info;
}

// What the engine gauges read at each scrape. The backends report no device
// memory yet: when one does (CUDA), fill snapshot.device_memory here and the
// tvq_gpu_memory_{used,total}_bytes gauges appear.
tvq::metrics::EngineSnapshotSource EngineSource(
    const tvq::core::Engine& engine) {
  return [&engine] {
    const tvq::scheduler::SchedulerStats stats = engine.scheduler().Stats();
    tvq::metrics::EngineSnapshot snapshot;
    snapshot.num_slots = stats.num_slots;
    snapshot.busy_slots = stats.busy_slots;
    snapshot.pinned_slots = stats.pinned_slots;
    snapshot.queued_requests = stats.queued_requests;
    snapshot.state_bytes_per_sequence = engine.state_bytes_per_sequence();
    return snapshot;
  };
}

// The session families' source: the engine's session store and transfers.
tvq::metrics::SessionSnapshotSource SessionSource(
    const tvq::core::Engine& engine) {
  return [&engine] {
    tvq::sessions::SessionManager& sessions = engine.sessions();
    const tvq::sessions::SessionStoreStats store = sessions.Stats();
    const tvq::sessions::SessionTransferStats transfers =
        sessions.TransferStats();
    tvq::metrics::SessionSnapshot snapshot;
    snapshot.sessions_host = store.sessions_host;
    snapshot.sessions_slot = store.sessions_slot;
    snapshot.sessions_disk = store.sessions_disk;
    snapshot.state_bytes_disk = store.state_bytes_disk;
    snapshot.spills_total = store.spills_total;
    snapshot.loads_total = store.loads_total;
    snapshot.adoptions_total = store.adoptions_total;
    snapshot.migrations_peer_total = transfers.migrations_peer_total;
    snapshot.migrations_disk_total = transfers.migrations_disk_total;
    snapshot.migration_bytes_peer_total = transfers.migration_bytes_peer_total;
    snapshot.migration_bytes_disk_total = transfers.migration_bytes_disk_total;
    snapshot.migration_failures_peer_total =
        transfers.migration_failures_peer_total;
    snapshot.migration_failures_disk_total =
        transfers.migration_failures_disk_total;
    snapshot.pinned = store.pinned;
    snapshot.state_bytes_host = store.state_bytes_host;
    snapshot.state_bytes_slot = store.state_bytes_slot;
    snapshot.capacity = store.capacity;
    snapshot.evictions_total = store.evictions_total;
    snapshot.expiries_total = store.expiries_total;
    snapshot.exports_total = transfers.exports_total;
    snapshot.export_bytes_total = transfers.export_bytes_total;
    snapshot.imports_total = transfers.imports_total;
    snapshot.import_bytes_total = transfers.import_bytes_total;
    snapshot.import_failures_total = transfers.import_failures_total;
    snapshot.prefix_entries = store.prefix_entries;
    snapshot.prefix_bytes = store.prefix_bytes;
    snapshot.prefix_queries_total = transfers.prefix_queries_total;
    snapshot.prefix_hits_total = transfers.prefix_hits_total;
    snapshot.prefix_cached_tokens_total = transfers.prefix_cached_tokens_total;
    return snapshot;
  };
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists this file's flags (absl matches files named like the
  // program by default).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc");
  };
  usage_config.version_string = [] {
    return std::string("tvq-server ") + TVQ_VERSION + "\n";
  };
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "Transformer-VQ inference server (gRPC tvq.v1.TextGeneration).\n"
      "Usage: tvq-server --model=DIR [--listen=HOST:PORT] [flags]\n"
      "Flag names take dashes or underscores (--max-queue = --max_queue).\n"
      "docs/configuration.md describes every flag.");
  std::vector<std::string> argument_storage;
  std::vector<char*> arguments =
      NormalizeFlagNames(argc, argv, argument_storage);
  // Parsed without absl's usage handling, which exits 1 after --help: help
  // and --version exit 0 here.
  const std::vector<char*> positional =
      absl::flags_internal::ParseCommandLineImpl(
          argc, arguments.data(),
          absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
          absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
          absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  if (const int usage = absl::flags_internal::HandleUsageFlags(
          std::cout, absl::ProgramUsageMessage());
      usage != -1) {
    std::cout.flush();
    return 0;
  }
  if (positional.size() > 1) {
    Log("unexpected argument \"%s\": tvq-server takes flags only "
        "(--model=DIR, --listen=HOST:PORT, ...; see --help)",
        positional[1]);
    return 2;
  }
  if (absl::Status flags = CheckFlags(); !flags.ok()) {
    Log("%s", flags.message());
    return 2;
  }
  std::unique_ptr<tvq::sessions::SessionPeer> drain_peer;
  const std::string peer = absl::GetFlag(FLAGS_drain_peer);
  // Whether a drain-peer key is set: a replica presenting it may hand this
  // server sessions of other keys (SessionChunk.owner).
  bool has_peer_key = false;
  {
    // Checked now; read again when a drain pushes (rotated files).
    absl::StatusOr<tvq::service::PeerCredentials> credentials =
        LoadPeerCredentials();
    if (!credentials.ok()) {
      Log("%s", credentials.status().message());
      return 2;
    }
    has_peer_key = !credentials->api_key.empty();
    if (peer.empty() &&
        (credentials->tls.has_value() || !credentials->api_key.empty())) {
      Log("--drain-peer-tls-* and --drain-peer-api-key-file are the "
          "credentials of --drain-peer: they need it");
      return 2;
    }
  }
  if (!peer.empty()) {
    absl::StatusOr<std::unique_ptr<tvq::sessions::SessionPeer>> made =
        tvq::service::MakePeerSessionImporter(
            peer, absl::GetFlag(FLAGS_drain_peer_timeout),
            &LoadPeerCredentials);
    if (!made.ok()) {
      Log("%s", made.status().message());
      return 2;
    }
    drain_peer = *std::move(made);
  }

  // SIGTERM/SIGINT: handled before any thread of ours exists (see
  // stop_signals.h for why blocking them is not enough). Until the model is
  // loaded, a signal ends the process at once with exit status 0.
  absl::StatusOr<std::unique_ptr<tvq::process::StopSignals>> installed_signals =
      tvq::process::StopSignals::Install();
  if (!installed_signals.ok()) {
    Log("%s", installed_signals.status().ToString());
    return 1;
  }
  tvq::process::StopSignals& stop_signals = **installed_signals;

  // ---- Security: TLS files and API keys, checked before anything listens.
  // null = plaintext.
  absl::StatusOr<std::unique_ptr<tvq::auth::TlsCertificates>> tls =
      tvq::auth::TlsCertificates::Load({absl::GetFlag(FLAGS_tls_cert),
                                        absl::GetFlag(FLAGS_tls_key),
                                        absl::GetFlag(FLAGS_tls_client_ca)});
  if (!tls.ok()) {
    Log("%s", tls.status().message());
    return 2;
  }
  const tvq::auth::TlsCertificates* certificates = tls->get();
  std::unique_ptr<tvq::auth::ApiKeyStore> api_keys;
  if (const std::string keys_file = absl::GetFlag(FLAGS_api_keys_file);
      !keys_file.empty()) {
    absl::StatusOr<std::unique_ptr<tvq::auth::ApiKeyStore>> loaded =
        tvq::auth::ApiKeyStore::Load(keys_file);
    if (!loaded.ok()) {
      Log("%s", loaded.status().message());
      return 2;
    }
    api_keys = *std::move(loaded);
    Log("API keys: %d from %s (reloaded on SIGHUP)%s", api_keys->size(),
        keys_file,
        absl::GetFlag(FLAGS_auth_exempt_health) ? "; health needs no key"
                                                : "");
  } else if (absl::GetFlag(FLAGS_auth_exempt_health)) {
    Log("--auth-exempt-health needs --api-keys-file");
    return 2;
  }
  // SIGHUP: the API keys and the TLS files, each kept as it was when its
  // files do not pass the start-up checks.
  // (Reload needs the non-const holder; the front ends get a const one.)
  stop_signals.SetReloadCallback([keys = api_keys.get(),
                                  certificates = tls->get()] {
    if (keys == nullptr && certificates == nullptr) {
      Log("SIGHUP: nothing to reload (no --api-keys-file, no --tls-cert)");
      return;
    }
    if (keys != nullptr) {
      absl::StatusOr<int> reloaded = keys->Reload();
      if (reloaded.ok()) {
        Log("SIGHUP: %d API keys from %s", *reloaded, keys->path());
      } else {
        Log("SIGHUP: kept the %d API keys in force: %s", keys->size(),
            reloaded.status().message());
      }
    }
    if (certificates != nullptr) {
      const absl::Status reloaded = certificates->Reload();
      if (reloaded.ok()) {
        Log("SIGHUP: TLS certificate %s and key %s reloaded%s; new "
            "connections use them",
            certificates->paths().cert, certificates->paths().key,
            certificates->mutual()
                ? absl::StrCat(", client CA ", certificates->paths().client_ca)
                : "");
      } else {
        Log("SIGHUP: kept the TLS certificate in force: %s",
            reloaded.message());
      }
    }
  });
  absl::StatusOr<std::unique_ptr<tvq::metrics::AuthMetrics>> auth_metrics =
      tvq::metrics::AuthMetrics::Create();
  if (!auth_metrics.ok()) {
    Log("%s", auth_metrics.status().ToString());
    return 1;
  }
  // ---- end security
  stop_signals.SetCallback([](int signal_number, int /*count*/) {
    Log("%s before the model was loaded: exiting without serving",
        tvq::process::StopSignalName(signal_number));
    ::_exit(0);
  });

  absl::StatusOr<std::unique_ptr<tvq::metrics::ServerMetrics>> created_metrics =
      tvq::metrics::ServerMetrics::Create();
  if (!created_metrics.ok()) {
    Log("%s", created_metrics.status().ToString());
    return 1;
  }
  tvq::metrics::ServerMetrics& metrics = **created_metrics;
  absl::StatusOr<std::unique_ptr<tvq::metrics::HttpMetrics>>
      created_http_metrics = tvq::metrics::HttpMetrics::Create(metrics);
  if (!created_http_metrics.ok()) {
    Log("%s", created_http_metrics.status().ToString());
    return 1;
  }
  std::unique_ptr<tvq::metrics::HttpMetrics> http_metrics =
      *std::move(created_http_metrics);
  tvq::metrics::SchedulerMetricsObserver scheduler_observer(metrics);

  const tvq::core::EngineConfig engine_config = EngineConfigFromFlags();
  const absl::Duration drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const std::string metrics_address = absl::GetFlag(FLAGS_metrics_address);

  // Every front end asks `readiness` whether it may serve `engine`.
  tvq::core::Readiness readiness;
  tvq::service::GenerationService service(&readiness, TVQ_VERSION);
  // With keys, sessions are each key's own (docs/security.md, "API keys").
  // The drain-peer key is re-read at each import that names an owner, so
  // a pool rotating it (every replica's file) keeps migrating.
  tvq::service::GenerationService::SessionOwnership ownership;
  ownership.by_api_key = api_keys != nullptr;
  if (api_keys != nullptr && has_peer_key) {
    ownership.trusted_peer = []() -> std::string {
      absl::StatusOr<std::string> key = ReadPeerKey();
      if (!key.ok() || key->empty()) return "";
      return tvq::auth::KeyOwnerId(tvq::auth::Sha256(*key));
    };
  }
  service.SetSessionOwnership(std::move(ownership));
  std::unique_ptr<tvq::core::Engine> engine;
  // Declared after `engine`: destroyed first, so no scrape outlives it.
  std::unique_ptr<tvq::metrics::MetricsExposer> metrics_exposer;
  if (!metrics_address.empty()) {
    std::vector<std::weak_ptr<prometheus::Collectable>> collectables =
        metrics.Collectables();
    collectables.push_back(http_metrics->Collectable());  // HTTP front end
    collectables.push_back((*auth_metrics)->Collectable());  // API keys
    absl::StatusOr<std::unique_ptr<tvq::metrics::MetricsExposer>> exposer =
        tvq::metrics::MetricsExposer::Start(metrics_address, collectables);
    if (!exposer.ok()) {
      Log("--metrics-address: %s", exposer.status().message());
      return 1;
    }
    metrics_exposer = *std::move(exposer);
  }

  if (const tvq::process::FileDescriptorLimit fds =
          tvq::process::RaiseFileDescriptorLimit();
      !fds.error.empty()) {
    Log("file descriptors: soft limit %d (hard %d); cannot raise it: %s",
        fds.before, fds.hard, fds.error);
  } else if (fds.after != fds.before) {
    Log("file descriptors: soft limit raised from %d to %d", fds.before,
        fds.after);
  }
  const tvq::service::ConnectionOptions connection_options =
      ConnectionOptionsFromFlags();
  absl::StatusOr<std::unique_ptr<tvq::service::GrpcListener>> bound =
      tvq::service::GrpcListener::Bind(
          listen, connection_options.max_connections,
          [](const std::string& line) { Log("%s", line); });
  if (!bound.ok()) {
    Log("%s", bound.status().message());
    return 1;
  }
  tvq::service::GrpcListener& listener = **bound;

  tvq::service::InstallProtobufLogFilter();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  tvq::service::GrpcSecurityOptions grpc_security;
  grpc_security.tls = certificates;
  grpc_security.keys = api_keys.get();
  grpc_security.exempt_health = absl::GetFlag(FLAGS_auth_exempt_health);
  grpc_security.observer = auth_metrics->get();
  // Kept until the server is gone: with TLS, gRPC asks them for the
  // certificates before every handshake.
  const std::shared_ptr<grpc::ServerCredentials> grpc_credentials =
      tvq::service::MakeServerCredentials(grpc_security);
  listener.AttachTo(builder, grpc_credentials);
  tvq::service::ApplyConnectionOptions(connection_options, builder);
  builder.RegisterService(&service);
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<tvq::service::RpcMetricsInterceptorFactory>(&metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    Log("cannot start the gRPC server on --listen=%s", listen);
    return 1;
  }
  listener.Start();
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  const std::string& address = listener.address();
  Log("listening on %s (version %s%s); loading %s", address, TVQ_VERSION,
      certificates == nullptr  ? ", plaintext"
      : certificates->mutual() ? ", TLS, client certificates required"
                               : ", TLS",
      engine_config.model_dir);
  if (metrics_exposer != nullptr) {
    Log("metrics on %s", metrics_exposer->url());
  }

  // ---- HTTP front end: listens while the model loads (503 until serving).
  std::unique_ptr<tvq::service::http::OpenAiRoutes> http_routes;
  std::unique_ptr<tvq::service::http::ApiKeyGate> http_key_gate;
  std::unique_ptr<tvq::service::http::HttpServer> http_server;
  if (const std::string http_listen = absl::GetFlag(FLAGS_http_listen);
      !http_listen.empty()) {
    absl::StatusOr<std::optional<tvq::service::http::ChatTemplate>>
        chat_template =
            tvq::service::http::LoadChatTemplate(engine_config.model_dir);
    if (!chat_template.ok()) {
      Log("%s", chat_template.status().message());
      server->Shutdown(absl::ToChronoTime(absl::Now()));
      return 1;
    }
    tvq::service::http::OpenAiOptions http_options;
    http_options.served_model_name = absl::GetFlag(FLAGS_served_model_name);
    if (http_options.served_model_name.empty()) {
      http_options.served_model_name =
          tvq::core::ModelName(engine_config.model_dir);
    }
    http_options.chat_template = *std::move(chat_template);
    // The body limit is --max-request-bytes, at most the HTTP default (a
    // JSON body is far larger than the same request as a proto).
    const size_t http_body_limit = std::min<size_t>(
        tvq::service::http::HttpServerOptions().max_body_bytes,
        static_cast<size_t>(engine_config.limits.max_request_bytes));
    http_options.max_request_bytes = static_cast<int64_t>(http_body_limit);
    http_options.max_connections = engine_config.limits.max_connections;
    const bool has_chat = http_options.chat_template.has_value();
    http_routes = std::make_unique<tvq::service::http::OpenAiRoutes>(
        &readiness, std::move(http_options));
    tvq::service::http::HttpServerOptions server_options;
    server_options.address = http_listen;
    server_options.max_body_bytes = http_body_limit;
    // The same bounds as gRPC's (GetModelInfo and /v1/models report them).
    server_options.max_pending_stream_bytes = static_cast<size_t>(
        engine_config.limits.max_pending_output_bytes);
    server_options.max_connections = engine_config.limits.max_connections;
    server_options.tls = certificates;
    tvq::service::http::HttpHandler* http_handler = http_routes.get();
    if (api_keys != nullptr) {
      http_key_gate = std::make_unique<tvq::service::http::ApiKeyGate>(
          api_keys.get(), absl::GetFlag(FLAGS_auth_exempt_health),
          auth_metrics->get(), http_routes.get());
      http_handler = http_key_gate.get();
    }
    absl::StatusOr<std::unique_ptr<tvq::service::http::HttpServer>> started =
        tvq::service::http::HttpServer::Start(server_options, http_handler,
                                              http_metrics.get());
    if (!started.ok()) {
      Log("--http-listen: %s", started.status().message());
      server->Shutdown(absl::ToChronoTime(absl::Now()));
      return 1;
    }
    http_server = *std::move(started);
    Log("HTTP API on %s://%s (chat template: %s)",
        certificates != nullptr ? "https" : "http", http_server->address(),
        has_chat ? "yes" : "none");
  }
  // ---- end HTTP front end

  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<tvq::core::Engine>> created =
      absl::InternalError("not created");
  try {
    created = tvq::core::Engine::Create(engine_config, &scheduler_observer);
  } catch (const std::system_error& error) {
    // Threads (the CPU backend's pool) the system refused to start.
    created = absl::ResourceExhaustedError(
        absl::StrFormat("cannot start the backend's threads (--threads=%d): %s",
                        engine_config.threads, error.what()));
  } catch (const std::bad_alloc&) {
    created = absl::ResourceExhaustedError(
        "out of memory while loading the model (see the memory check in "
        "docs/configuration.md; lower --num-slots or --state-memory-bytes)");
  }
  if (!created.ok()) {
    Log("cannot load the model: %s", created.status().ToString());
    listener.Stop();
    server->Shutdown(absl::ToChronoTime(absl::Now()));
    return 1;
  }
  engine = *std::move(created);
  if (drain_peer != nullptr) engine->SetDrainPeer(std::move(drain_peer));
  // From here a signal is counted (WaitForCount below), no longer an exit.
  stop_signals.SetCallback(nullptr);
  if (absl::Status info = metrics.SetBuildInfo(
          {TVQ_VERSION, engine->backend_name(), engine->device_name()});
      !info.ok()) {
    Log("%s", info.ToString());
  }
  if (absl::Status info = metrics.SetModelInfo(DescribeModel(engine->Info()));
      !info.ok()) {
    Log("%s", info.ToString());
  }
  metrics.SetEngineSource(EngineSource(*engine));
  metrics.SetSessionSource(SessionSource(*engine));
  for (const std::string& problem : engine->session_dir_problems()) {
    Log("--session-dir: %s", problem);
  }
  if (!engine_config.sessions.dir.empty()) {
    Log("--session-dir=%s: %d sessions on disk", engine_config.sessions.dir,
        engine->sessions().Stats().sessions_disk);
  }
  readiness.SetServing(engine.get());
  health->SetServingStatus(true);
  health->SetServingStatus(kServiceName, true);
  const tvq::runtime::ModelConfig& config = engine->model_config();
  Log("ready in %.2fs: %d layers, vocab %d, %d slots x %d state bytes, %s, "
      "max queue %d; serving on %s",
      absl::ToDoubleSeconds(absl::Now() - load_start), config.n_layer,
      config.n_vocab, engine->num_slots(), engine->state_bytes_per_sequence(),
      engine->device_name(), engine_config.max_queue, address);

  // Serving until the first signal; a second one cuts the drain short (the
  // requests still running end as --drain-timeout would end them); later
  // ones are logged and change nothing.
  const int signal_number = stop_signals.WaitForCount(1);
  Log("%s: draining (up to %s; a second signal cuts it short)",
      tvq::process::StopSignalName(signal_number),
      absl::FormatDuration(drain_timeout));
  stop_signals.SetCallback([&engine](int number, int count) {
    if (count == 2) {
      Log("second stop signal (%s): cutting the drain short",
          tvq::process::StopSignalName(number));
      engine->Drain(absl::ZeroDuration());
    } else {
      Log("%s: already stopping", tvq::process::StopSignalName(number));
    }
  });
  health->SetServingStatus(false);
  health->SetServingStatus(kServiceName, false);
  readiness.SetDraining();
  const absl::Time drain_deadline = absl::Now() + drain_timeout;
  const tvq::core::Engine::DrainResult drained = engine->Drain(drain_timeout);
  if (drained.cut_short > 0) {
    Log("drain timeout: %d requests cut short", drained.cut_short);
  }
  const tvq::sessions::MigrationReport& migration = drained.migration;
  for (const std::string& problem : migration.problems) {
    Log("migration: %s", problem);
  }
  if (migration.migrated() > 0 || migration.lost > 0) {
    Log("migration: %d sessions migrated in %.3fs (%d to the peer, %d bytes; "
        "%d to --session-dir, %d bytes); %d peer failures; %d lost",
        migration.migrated(), absl::ToDoubleSeconds(migration.elapsed),
        migration.to_peer, migration.peer_bytes, migration.to_disk,
        migration.disk_bytes, migration.peer_failures, migration.lost);
  }
  // Every request has ended; let their last messages reach the clients (a
  // slow reader may still be catching up), then close the connections:
  // waiting for clients to hang up could take forever. After a second
  // signal only the short grace is left.
  const absl::Time delivery_grace = absl::Now() + absl::Seconds(2);
  if (!service.WaitForActiveCalls(
          stop_signals.count() >= 2
              ? delivery_grace
              : std::max(drain_deadline, delivery_grace))) {
    Log("some clients did not read their last messages in time");
  }
  // HTTP front end: the same for its responses, then close the listener.
  if (http_server != nullptr &&
      !http_server->WaitForIdle(
          stop_signals.count() >= 2
              ? delivery_grace
              : std::max(drain_deadline, delivery_grace))) {
    Log("some HTTP clients did not read their last bytes in time");
  }
  if (http_server != nullptr) http_server->Stop();
  // A signal from now on is only logged; the engine may go.
  stop_signals.SetCallback([](int number, int /*count*/) {
    Log("%s: already stopping", tvq::process::StopSignalName(number));
  });
  listener.Stop();
  server->Shutdown(absl::ToChronoTime(absl::Now()));
  engine->Stop();
  metrics.SetEngineSource(nullptr);
  metrics.SetSessionSource(nullptr);
  Log("stopped");
  return 0;
}
