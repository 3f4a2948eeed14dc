// The engine without its scheduler: a loaded model directory, the backend it
// runs on, the Transformer-VQ forward pass and the pool of state slots,
// assembled from an EngineConfig. core::Engine adds the scheduler on top;
// tests and benchmarks that drive the forward pass or their own scheduler
// build this instead of re-writing the assembly.
#ifndef TVQ_SERVER_CORE_MODEL_RUNTIME_H_
#define TVQ_SERVER_CORE_MODEL_RUNTIME_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "server/backend/backend.h"
#include "server/core/engine_config.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "server/model/model_dir.h"

namespace tvq::core {

// Members in construction order (destroyed in reverse: the pool and the
// forward pass go before the backend they hold memory of). Move-only; the
// pointers are never null in a value the functions below return.
struct ModelRuntime {
  runtime::LoadedModel model;
  std::unique_ptr<runtime::Backend> backend;
  std::unique_ptr<runtime::TransformerVq> transformer;
  std::unique_ptr<runtime::StatePool> pool;
  // The prompt chunk the forward pass was built for (PrefillChunkFor).
  int prefill_chunk = 0;

  const runtime::ModelConfig& config() const { return model.config(); }
  const runtime::Tokenizer& tokenizer() const { return *model.tokenizer; }
  // Bytes of one slot's state.
  int64_t state_bytes_per_sequence() const;
  // "cpu" or "cuda".
  const char* backend_name() const;
};

// `config.prefill_chunk` rounded down to whole blocks (block_len of the
// config, else of the model), at least one block: chunks that are whole
// blocks keep every prompt cut at block boundaries.
int PrefillChunkFor(const EngineConfig& config,
                    const runtime::ModelConfig& model);

// `config.num_slots`, or when 0 the slots state_memory_bytes holds (at most
// kMaxDerivedSlots). InvalidArgument when it holds none.
absl::StatusOr<int> SlotCountFor(const EngineConfig& config,
                                 int64_t bytes_per_slot);

// Creates the backend, then loads config.model_dir (runtime::LoadModelDir),
// then builds the forward pass and the state pool. The first failure is
// returned as it is (it names the device, file, key or tensor).
absl::StatusOr<ModelRuntime> LoadModelRuntime(const EngineConfig& config);

// The same from an already loaded (or in-memory) model; config.model_dir is
// not read.
absl::StatusOr<ModelRuntime> BuildModelRuntime(runtime::LoadedModel model,
                                               const EngineConfig& config);

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_MODEL_RUNTIME_H_
