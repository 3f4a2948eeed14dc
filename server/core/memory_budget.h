// Whether a model fits in the memory the process may use, checked before
// anything big is allocated: a model whose position tables or state slots
// cannot fit fails with a message that says what it needs and what limits
// it, instead of std::bad_alloc (or the OOM killer) halfway through.
#ifndef TVQ_SERVER_CORE_MEMORY_BUDGET_H_
#define TVQ_SERVER_CORE_MEMORY_BUDGET_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/model/model_config.h"

namespace tvq::core {

// Host bytes a model takes once loaded (estimates, float32).
struct MemoryNeeds {
  int64_t weights = 0;
  // Relative-position tables and codebooks the forward pass builds.
  int64_t tables = 0;
  int64_t slots = 0;
  int num_slots = 0;
  int64_t total() const { return weights + tables + slots; }
};

MemoryNeeds EstimateMemoryNeeds(const runtime::ModelConfig& config,
                                int num_slots, int64_t bytes_per_slot);

// What the process may still allocate: the smallest of RLIMIT_AS minus the
// address space in use, the cgroup's memory.max minus memory.current, and
// the system's MemAvailable. `source` names the one that limits.
struct MemoryAvailable {
  int64_t bytes = INT64_MAX;
  std::string source = "no limit found";
};
MemoryAvailable ProcessMemoryAvailable();

// ResourceExhausted naming the needs, the limit and the config keys and
// flags that size them, when needs.total() > available.bytes.
absl::Status CheckMemoryNeeds(const MemoryNeeds& needs,
                              const MemoryAvailable& available,
                              const runtime::ModelConfig& config);

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_MEMORY_BUDGET_H_
