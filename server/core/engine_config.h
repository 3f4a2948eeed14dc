// Everything the engine is built from: plain values, filled once from the
// tvq-server flags in main.cc (or directly by tests and benchmarks). No flag
// library here; main.cc checks the flags' ranges (CheckFlags) before it
// fills this struct, and the defaults are the flags' defaults
// (docs/configuration.md).
#ifndef TVQ_SERVER_CORE_ENGINE_CONFIG_H_
#define TVQ_SERVER_CORE_ENGINE_CONFIG_H_

#include <cstdint>
#include <string>

#include "server/backend/tensor.h"
#include "server/core/request_limits.h"

namespace tvq::core {

// Sessions (server/sessions/, docs/sessions.md).
struct SessionConfig {
  // Host bytes all sessions' saved states may take together; every session
  // is charged one state (--session-memory-bytes).
  int64_t memory_bytes = int64_t{4} << 30;
  // Seconds an idle session lives when it sets no ttl (--session-ttl).
  int64_t default_ttl_seconds = 3600;
  // Longest ttl_seconds a session may ask for (--session-max-ttl).
  int64_t max_ttl_seconds = 30 * 24 * 3600;
  // The disk tier's directory (--session-dir); empty = no disk tier.
  std::string dir;
  // Automatic prefix reuse for requests without a session (--prefix-reuse).
  bool prefix_reuse = true;
  // Sessions one API key may hold on this server (--max-sessions-per-key);
  // 0 = no limit (sessions::SessionStoreOptions::max_sessions_per_owner).
  int64_t max_per_key = 0;
};

// At most this many slots are derived from state_memory_bytes.
inline constexpr int kMaxDerivedSlots = 256;

struct EngineConfig {
  // Model directory: config.json, model.safetensors, the tokenizer file.
  std::string model_dir = "models/demo";
  // auto, cpu, cuda or cuda:N (runtime::BackendOptions::device).
  std::string device = "auto";
  // CPU backend threads (0 = all cores).
  int threads = 0;
  // State slots; 0 = state_memory_bytes / bytes per slot, at most
  // kMaxDerivedSlots.
  int num_slots = 0;
  int64_t state_memory_bytes = int64_t{1} << 30;
  // Requests that may wait for a free slot.
  int max_queue = 256;
  // Prompt tokens one slot feeds per step (rounded down to whole blocks, at
  // least one block).
  int prefill_chunk = 256;
  // Tokens (decode + prefill) one scheduler step aims not to exceed.
  int step_token_budget = 512;
  // Prefill block length (0 = the model's block_len).
  int block_len = 0;
  // Dtype the weight matrices are kept in for the backend (--weights-dtype:
  // kF32 or kBF16); norm gains, biases and attention tables stay F32.
  runtime::DType weights_dtype = runtime::DType::kF32;
  // Dtype of the state's means and window values (--state-dtype: kF32 or
  // kBF16); counts are always F32.
  runtime::DType state_dtype = runtime::DType::kF32;
  // What requests may ask for (checked by the front ends' validation).
  RequestLimits limits;
  SessionConfig sessions;
};

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_ENGINE_CONFIG_H_
