#include "server/core/model_runtime.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"
#include "server/core/memory_budget.h"

namespace tvq::core {
namespace {

absl::StatusOr<std::unique_ptr<runtime::Backend>> CreateConfiguredBackend(
    const EngineConfig& config) {
  runtime::BackendOptions options;
  options.device = config.device;
  options.num_threads = config.threads;
  return runtime::CreateBackend(options);
}

absl::StatusOr<ModelRuntime> Assemble(std::unique_ptr<runtime::Backend> backend,
                                      runtime::LoadedModel model,
                                      const EngineConfig& config) {
  ModelRuntime result;
  result.model = std::move(model);
  result.backend = std::move(backend);
  const runtime::ModelConfig& model_config = result.config();

  // Everything big is allocated below: check that it fits first.
  const int64_t bytes_per_slot = static_cast<int64_t>(
      runtime::StatePool::BytesPerSlotFor(model_config, config.state_dtype));
  TVQ_ASSIGN_OR_RETURN(const int num_slots,
                       SlotCountFor(config, bytes_per_slot));
  MemoryNeeds needs =
      EstimateMemoryNeeds(model_config, num_slots, bytes_per_slot);
  needs.weights = 0;  // already loaded
  TVQ_RETURN_IF_ERROR(
      CheckMemoryNeeds(needs, ProcessMemoryAvailable(), model_config));

  result.prefill_chunk = PrefillChunkFor(config, model_config);
  runtime::EngineOptions engine_options;
  engine_options.block_len = config.block_len;
  engine_options.max_prefill_chunk = result.prefill_chunk;
  engine_options.weights_dtype = config.weights_dtype;
  TVQ_ASSIGN_OR_RETURN(
      result.transformer,
      runtime::TransformerVq::Create(*result.model.weights, *result.backend,
                                     engine_options));

  TVQ_ASSIGN_OR_RETURN(
      result.pool,
      runtime::StatePool::Create(model_config, *result.backend, num_slots,
                                 config.state_dtype));
  return result;
}

}  // namespace

int64_t ModelRuntime::state_bytes_per_sequence() const {
  if (pool != nullptr) return static_cast<int64_t>(pool->BytesPerSlot());
  return static_cast<int64_t>(runtime::StatePool::BytesPerSlotFor(config()));
}

const char* ModelRuntime::backend_name() const {
  return backend->device() == runtime::DeviceKind::kCuda ? "cuda" : "cpu";
}

int PrefillChunkFor(const EngineConfig& config,
                    const runtime::ModelConfig& model) {
  const int block_len =
      config.block_len > 0 ? config.block_len : model.block_len;
  return std::max(block_len, config.prefill_chunk / block_len * block_len);
}

absl::StatusOr<int> SlotCountFor(const EngineConfig& config,
                                 int64_t bytes_per_slot) {
  if (config.num_slots != 0) return config.num_slots;
  const int64_t budget = config.state_memory_bytes;
  const int64_t fitting = budget / bytes_per_slot;
  if (fitting < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--state-memory-bytes=%d holds no slot: one slot of this model "
        "takes %d bytes",
        budget, bytes_per_slot));
  }
  return static_cast<int>(std::min<int64_t>(fitting, kMaxDerivedSlots));
}

absl::StatusOr<ModelRuntime> LoadModelRuntime(const EngineConfig& config) {
  TVQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Backend> backend,
                       CreateConfiguredBackend(config));
  // The weights, tables and slots must fit before the weights are read.
  TVQ_ASSIGN_OR_RETURN(const runtime::ModelConfig model_config,
                       runtime::ModelWeights::LoadConfig(config.model_dir));
  const int64_t bytes_per_slot =
      static_cast<int64_t>(runtime::StatePool::BytesPerSlotFor(
          model_config, config.state_dtype));
  TVQ_ASSIGN_OR_RETURN(const int num_slots,
                       SlotCountFor(config, bytes_per_slot));
  TVQ_RETURN_IF_ERROR(CheckMemoryNeeds(
      EstimateMemoryNeeds(model_config, num_slots, bytes_per_slot),
      ProcessMemoryAvailable(), model_config));
  TVQ_ASSIGN_OR_RETURN(runtime::LoadedModel model,
                       runtime::LoadModelDir(config.model_dir));
  return Assemble(std::move(backend), std::move(model), config);
}

absl::StatusOr<ModelRuntime> BuildModelRuntime(runtime::LoadedModel model,
                                               const EngineConfig& config) {
  if (model.weights == nullptr || model.tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "BuildModelRuntime: the model has no weights or no tokenizer");
  }
  TVQ_ASSIGN_OR_RETURN(std::unique_ptr<runtime::Backend> backend,
                       CreateConfiguredBackend(config));
  return Assemble(std::move(backend), std::move(model), config);
}

}  // namespace tvq::core
