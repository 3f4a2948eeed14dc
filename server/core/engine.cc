#include "server/core/engine.h"

#include <memory>
#include <utility>

#include "server/base/status_macros.h"

namespace tvq::core {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    const EngineConfig& config, scheduler::SchedulerObserver* observer) {
  TVQ_ASSIGN_OR_RETURN(ModelRuntime runtime, LoadModelRuntime(config));
  std::unique_ptr<Engine> engine(new Engine(config, std::move(runtime)));
  scheduler::SchedulerOptions options;
  options.max_queue = config.max_queue;
  options.batch.prefill_chunk = engine->runtime_.prefill_chunk;
  options.batch.step_token_budget = config.step_token_budget;
  TVQ_ASSIGN_OR_RETURN(
      engine->scheduler_,
      scheduler::Scheduler::Create(
          *engine->runtime_.transformer, *engine->runtime_.pool,
          engine->runtime_.tokenizer(), options, observer));
  return engine;
}

Engine::Engine(const EngineConfig& config, ModelRuntime runtime)
    : config_(config),
      runtime_(std::move(runtime)),
      backend_name_(runtime_.backend_name()),
      device_name_(runtime_.backend->DeviceName()) {}

Engine::~Engine() { Stop(); }

int Engine::num_slots() const { return runtime_.pool->num_slots(); }

ModelInfo Engine::Info() const {
  const runtime::ModelWeights& weights = *runtime_.model.weights;
  ModelInfo info;
  info.config = model_config();
  info.path = weights.directory();
  info.name = ModelName(info.path);
  info.weights_dtype = weights.stored_dtype();
  info.num_parameters = weights.num_parameters();
  info.tokenizer_kind = info.config.tokenizer_kind;
  info.vocab_size = tokenizer().vocab_size();
  info.state_bytes_per_sequence = state_bytes_per_sequence();
  info.backend = backend_name_;
  info.device = device_name_;
  info.slots = scheduler_->Stats();
  info.max_queue = config_.max_queue;
  info.limits = config_.limits;
  return info;
}

int Engine::Drain(absl::Duration timeout) { return scheduler_->Drain(timeout); }

void Engine::Stop() {
  if (scheduler_ != nullptr) scheduler_->Stop();
}

}  // namespace tvq::core
