// The transport-free engine every front end serves: the loaded model
// directory, the backend, the Transformer-VQ forward pass, the state pool
// and the scheduler (ModelRuntime + Scheduler), built from one EngineConfig.
// Front ends (gRPC, HTTP) translate and validate requests, then submit them
// to scheduler(); they ask the engine for model info and score summaries.
// Readiness (readiness.h) says whether they may.
//
// Thread-safe as the scheduler is: Submit*/Cancel/Stats from any thread.
#ifndef TVQ_SERVER_CORE_ENGINE_H_
#define TVQ_SERVER_CORE_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/engine_config.h"
#include "server/core/model_info.h"
#include "server/core/model_runtime.h"
#include "server/core/score_summary.h"
#include "server/model/model_config.h"
#include "server/scheduler/request.h"
#include "server/scheduler/scheduler.h"
#include "server/sessions/fingerprint.h"
#include "server/scheduler/scheduler_observer.h"
#include "server/sessions/session_manager.h"
#include "server/sessions/session_migration.h"
#include "server/text/tokenizer.h"

namespace tvq::core {

class Engine {
 public:
  // Loads everything `config` names (LoadModelRuntime) and starts the
  // scheduler, which reports to `observer` (may be null; must outlive the
  // engine). The first failure is returned as it is.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      const EngineConfig& config, scheduler::SchedulerObserver* observer);

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  // Stops the scheduler before the runtime goes.
  ~Engine();

  const EngineConfig& config() const { return config_; }
  const runtime::ModelConfig& model_config() const { return runtime_.config(); }
  const runtime::Tokenizer& tokenizer() const { return runtime_.tokenizer(); }
  const ModelRuntime& runtime() const { return runtime_; }
  // Submit, cancel, stats. Never null.
  scheduler::Scheduler& scheduler() const { return *scheduler_; }
  // Sessions: create, continue, fork, export, import (docs/sessions.md).
  // Never null.
  sessions::SessionManager& sessions() const { return *sessions_; }
  // Files of --session-dir skipped at start-up, one line each (corrupt,
  // foreign, interrupted writes removed); for the log.
  const std::vector<std::string>& session_dir_problems() const {
    return session_dir_problems_;
  }
  // Of the model directory, computed once at load (sessions/fingerprint.h).
  const sessions::ModelFingerprints& fingerprints() const {
    return fingerprints_;
  }

  int num_slots() const;
  int64_t state_bytes_per_sequence() const {
    return runtime_.state_bytes_per_sequence();
  }
  // Bytes of one exported state (StatePool::ExportBytes): what a session
  // holds in host memory.
  int64_t state_export_bytes() const {
    return static_cast<int64_t>(runtime_.pool->ExportBytes());
  }
  // "cpu" or "cuda", and the device in words ("cpu (2 threads)").
  const std::string& backend_name() const { return backend_name_; }
  const std::string& device_name() const { return device_name_; }

  // The model, the device, the limits and the slots right now.
  ModelInfo Info() const;
  // Bits per byte and the byte count of a finished score.
  ScoreSummary Summarize(const scheduler::ScoreResult& result) const {
    return SummarizeScore(model_config(), result);
  }

  // Where Drain pushes sessions (--drain-peer); null (the default): none.
  // Set before serving.
  void SetDrainPeer(std::unique_ptr<sessions::SessionPeer> peer) {
    drain_peer_ = std::move(peer);
  }

  struct DrainResult {
    // Requests cut short at the timeout (a generation cut after its first
    // token leaves its session at the last token delivered).
    int cut_short = 0;
    // Migration on drain (sessions/session_migration.h); empty for a Drain
    // that was not the first.
    sessions::MigrationReport migration;
  };
  // Graceful end (Scheduler::Drain): new submissions fail at once, accepted
  // requests may finish for up to `timeout`, the rest are cut short; then
  // the first call migrates every idle session held in memory to the drain
  // peer, or to --session-dir (SessionManager::Migrate). A later call
  // (second signal) only cuts the requests short. Front ends mark
  // Readiness draining first so that they refuse new work with their own
  // message.
  DrainResult Drain(absl::Duration timeout);
  // Stops the scheduler's loop. Idempotent.
  void Stop();

 private:
  Engine(const EngineConfig& config, ModelRuntime runtime);

  const EngineConfig config_;
  ModelRuntime runtime_;
  std::string backend_name_;
  std::string device_name_;
  sessions::ModelFingerprints fingerprints_;
  std::vector<std::string> session_dir_problems_;
  // Destroyed after the scheduler: the sinks of requests still running on
  // sessions refer to it until the scheduler has ended them.
  std::unique_ptr<sessions::SessionManager> sessions_;
  std::unique_ptr<sessions::SessionPeer> drain_peer_;
  std::atomic<bool> migrated_{false};
  // Last: stopped and destroyed before the runtime it drives.
  std::unique_ptr<scheduler::Scheduler> scheduler_;
};

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_ENGINE_H_
