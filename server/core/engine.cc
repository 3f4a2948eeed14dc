#include "server/core/engine.h"

#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
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
  const runtime::ModelConfig& model = engine->runtime_.config();
  TVQ_ASSIGN_OR_RETURN(
      engine->fingerprints_,
      sessions::FingerprintModelDir(config.model_dir, model.n_vocab));
  const runtime::StatePool& pool = *engine->runtime_.pool;
  sessions::BlobIdentity identity;
  identity.model_fingerprint = engine->fingerprints_.model;
  identity.tokenizer_fingerprint = engine->fingerprints_.tokenizer;
  identity.num_sublayers = static_cast<uint32_t>(model.num_sublayers());
  identity.n_head = static_cast<uint32_t>(model.n_head);
  identity.n_code = static_cast<uint32_t>(model.n_code);
  identity.mem_len = static_cast<uint32_t>(model.mem_len);
  identity.d_v = static_cast<uint32_t>(model.d_v);
  identity.n_vocab = static_cast<uint32_t>(model.n_vocab);
  identity.state_bytes = pool.ExportBytes();
  if (config.sessions.memory_bytes < static_cast<int64_t>(pool.ExportBytes())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--session-memory-bytes=%d holds no session: one saved state of this "
        "model takes %d bytes",
        config.sessions.memory_bytes, pool.ExportBytes()));
  }
  sessions::SessionStoreOptions store;
  store.memory_bytes = config.sessions.memory_bytes;
  store.bytes_per_state = static_cast<int64_t>(pool.ExportBytes());
  store.default_ttl = absl::Seconds(config.sessions.default_ttl_seconds);
  store.max_ttl = absl::Seconds(config.sessions.max_ttl_seconds);
  store.max_sessions_per_owner = config.sessions.max_per_key;
  engine->sessions_ = std::make_unique<sessions::SessionManager>(
      *engine->scheduler_, pool, identity, model.eos_id, store);
  engine->sessions_->SetPrefixReuse(config.sessions.prefix_reuse);
  if (!config.sessions.dir.empty()) {
    TVQ_ASSIGN_OR_RETURN(engine->session_dir_problems_,
                         engine->sessions_->OpenDisk(config.sessions.dir));
  }
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
  info.served_weights_dtype = runtime::DTypeName(config_.weights_dtype);
  info.state_dtype = runtime::DTypeName(config_.state_dtype);
  info.num_parameters = weights.num_parameters();
  info.tokenizer_kind = info.config.tokenizer_kind;
  info.vocab_size = tokenizer().vocab_size();
  info.state_bytes_per_sequence = state_bytes_per_sequence();
  info.backend = backend_name_;
  info.device = device_name_;
  info.slots = scheduler_->Stats();
  info.max_queue = config_.max_queue;
  info.limits = config_.limits;
  info.sessions = sessions_->Stats();
  info.session_config = config_.sessions;
  return info;
}

Engine::DrainResult Engine::Drain(absl::Duration timeout) {
  // The first call migrates (claimed before its drain, so that a second
  // call cutting the drain short does not).
  const bool migrate = !migrated_.exchange(true);
  DrainResult result;
  result.cut_short = scheduler_->Drain(timeout);
  if (migrate) {
    result.migration = sessions_->Migrate(drain_peer_.get());
  }
  return result;
}

void Engine::Stop() {
  if (scheduler_ != nullptr) scheduler_->Stop();
}

}  // namespace tvq::core
