#include "server/core/readiness.h"

#include "absl/status/status.h"

namespace tvq::core {

void Readiness::SetServing(Engine* engine) {
  engine_.store(engine, std::memory_order_release);
}

void Readiness::SetDraining() {
  draining_.store(true, std::memory_order_release);
}

ReadinessState Readiness::state() const {
  if (draining_.load(std::memory_order_acquire)) {
    return ReadinessState::kDraining;
  }
  return engine_.load(std::memory_order_acquire) == nullptr
             ? ReadinessState::kLoading
             : ReadinessState::kServing;
}

absl::StatusOr<Engine*> Readiness::ForQueries() const {
  Engine* engine = engine_.load(std::memory_order_acquire);
  if (engine == nullptr) {
    return absl::UnavailableError("the model is loading; retry shortly");
  }
  return engine;
}

absl::StatusOr<Engine*> Readiness::ForNewWork() const {
  absl::StatusOr<Engine*> engine = ForQueries();
  if (engine.ok() && draining_.load(std::memory_order_acquire)) {
    return absl::UnavailableError(
        "the server is shutting down and accepts no new requests");
  }
  return engine;
}

}  // namespace tvq::core
