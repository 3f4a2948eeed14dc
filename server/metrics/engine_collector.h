// Engine gauges computed at scrape time from a snapshot source (the
// scheduler's counts and the state pool's sizes), so that they are exact at
// every scrape and never stale when the server is idle:
//   tvq_queue_length, tvq_requests_running, tvq_slots{state},
//   tvq_state_utilization_ratio, tvq_state_bytes_per_sequence,
//   tvq_state_memory_bytes{state}, tvq_gpu_memory_{used,total}_bytes{device}.
// Before a source is set (the model is still loading) none of them is
// exposed.
#ifndef TVQ_SERVER_METRICS_ENGINE_COLLECTOR_H_
#define TVQ_SERVER_METRICS_ENGINE_COLLECTOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace tvq::metrics {

// Memory of one accelerator, as its backend reports it.
struct DeviceMemory {
  // e.g. "cuda:0".
  std::string device;
  int64_t used_bytes = 0;
  int64_t total_bytes = 0;
};

struct EngineSnapshot {
  int num_slots = 0;
  // Slots holding a request (= requests running).
  int busy_slots = 0;
  // Slots holding a pinned state (never evicted): neither busy nor free. The
  // other slots are free: empty, or holding a retained state a new request
  // may evict.
  int pinned_slots = 0;
  // Requests waiting for a slot.
  int queued_requests = 0;
  int64_t state_bytes_per_sequence = 0;
  // One entry per device when the backend reports device memory (CUDA);
  // empty on the CPU, and then no tvq_gpu_memory_* series is exposed.
  std::vector<DeviceMemory> device_memory;
};

// Called on a scrape thread; must be thread-safe and quick.
using EngineSnapshotSource = std::function<EngineSnapshot()>;

class EngineCollector final : public prometheus::Collectable {
 public:
  // Replaces the source; an empty function removes it. When this returns, no
  // scrape uses the previous source any more, so whatever it reads may be
  // destroyed.
  void SetSource(EngineSnapshotSource source);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable absl::Mutex mutex_;
  EngineSnapshotSource source_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_ENGINE_COLLECTOR_H_
