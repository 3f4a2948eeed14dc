// What the server reports about the model it serves (GetModelInfo, the
// tvq_model_info and tvq_build_info metrics), as plain values with no
// transport in them. core::Engine::Info() fills it.
#ifndef TVQ_SERVER_CORE_MODEL_INFO_H_
#define TVQ_SERVER_CORE_MODEL_INFO_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "server/core/engine_config.h"
#include "server/core/request_limits.h"
#include "server/model/model_config.h"
#include "server/scheduler/scheduler.h"
#include "server/sessions/session_store.h"
#include "server/text/tokenizer_kind.h"

namespace tvq::core {

struct ModelInfo {
  runtime::ModelConfig config;
  // The model directory as given, and its base name ("models/demo/" ->
  // "demo").
  std::string path;
  std::string name;
  // Stored dtype of the weights: "F32", "BF16", "F16" or "mixed".
  std::string weights_dtype;
  // Dtype the engine keeps the weight matrices in (--weights-dtype) and the
  // state's means and window values in (--state-dtype): "F32" or "BF16".
  std::string served_weights_dtype = "F32";
  std::string state_dtype = "F32";
  int64_t num_parameters = 0;
  runtime::TokenizerKind tokenizer_kind = runtime::TokenizerKind::kByte;
  // Ids the tokenizer can produce (may be below config.n_vocab).
  int vocab_size = 0;
  int64_t state_bytes_per_sequence = 0;
  // "cpu" or "cuda", and the device in words.
  std::string backend;
  std::string device;
  // Slots and queue at the moment Info() was called.
  scheduler::SchedulerStats slots;
  int max_queue = 0;
  RequestLimits limits;
  // Sessions right now, and their limits.
  sessions::SessionStoreStats sessions;
  SessionConfig session_config;
};

// The base name of a model directory: trailing slashes dropped, the part
// after the last '/' ("models/demo/" -> "demo", "/" -> "").
std::string ModelName(std::string_view path);

// "byte" or "sentencepiece".
const char* TokenizerKindName(runtime::TokenizerKind kind);

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_MODEL_INFO_H_
