// Whether the server can take work, shared by every front end. It exists
// before the engine does (front ends listen while the model loads) and moves
// one way only: loading -> serving (SetServing) -> draining (SetDraining).
//
//   loading:  every call is UNAVAILABLE "the model is loading; retry shortly"
//   serving:  everything is answered
//   draining: new work (generate, score) is UNAVAILABLE "the server is
//             shutting down and accepts no new requests"; queries (tokenize,
//             detokenize, model info) keep being answered, and work already
//             accepted goes on.
// Thread-safe; the engine must outlive the last call that got it.
#ifndef TVQ_SERVER_CORE_READINESS_H_
#define TVQ_SERVER_CORE_READINESS_H_

#include <atomic>

#include "absl/status/statusor.h"

namespace tvq::core {

class Engine;

enum class ReadinessState { kLoading, kServing, kDraining };

class Readiness {
 public:
  // Starts serving `engine` (kept by pointer, not owned).
  void SetServing(Engine* engine);
  // From now on ForNewWork fails. Idempotent; also valid while loading.
  void SetDraining();

  ReadinessState state() const;
  // The engine for new work (generate, score): UNAVAILABLE while loading or
  // draining.
  absl::StatusOr<Engine*> ForNewWork() const;
  // The engine for queries (tokenize, detokenize, model info): UNAVAILABLE
  // only while loading.
  absl::StatusOr<Engine*> ForQueries() const;

 private:
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
};

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_READINESS_H_
