// Session gauges and counters computed at scrape time from a snapshot source
// (sessions::SessionManager's store and transfer counts), exact at every
// scrape:
//   tvq_sessions{tier}                 sessions by tier (host, slot, disk)
//   tvq_session_state_bytes{tier}      bytes of their saved states by tier
//   tvq_sessions_pinned                pinned sessions
//   tvq_session_capacity               sessions the budget holds
//   tvq_session_evictions_total        evicted (LRU, budget full)
//   tvq_session_expiries_total         expired (idle past their TTL)
//   tvq_session_spills_total, tvq_session_loads_total  written to / read
//                                      back from --session-dir
//   tvq_session_adoptions_total        of the loads: taken from a shared
//                                      --session-dir (another server's)
//   tvq_session_migrations_total{target}, tvq_session_migration_bytes_total
//   {target}, tvq_session_migration_failures_total{target}  migration on
//                                      drain (target: peer, disk)
//   tvq_session_exports_total, tvq_session_export_bytes_total
//   tvq_session_imports_total, tvq_session_import_bytes_total
//   tvq_session_import_failures_total  blobs refused
//   tvq_prefix_cache_entries, tvq_prefix_cache_bytes   retained states
//   tvq_prefix_cache_queries_total, tvq_prefix_cache_hits_total,
//   tvq_prefix_cache_cached_tokens_total               automatic reuse
//   tvq_cache_config_info{block_size, num_gpu_blocks}  value 1: the reuse
//     granularity in tokens (1: a session continues at any token) and the
//     number of retainable states (the session capacity), for the inference
//     gateway's prefix scorer.
// Before a source is set (the model is still loading) none is exposed.
#ifndef TVQ_SERVER_METRICS_SESSION_COLLECTOR_H_
#define TVQ_SERVER_METRICS_SESSION_COLLECTOR_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace tvq::metrics {

struct SessionSnapshot {
  int sessions_host = 0;
  int sessions_slot = 0;
  int sessions_disk = 0;
  int pinned = 0;
  int64_t state_bytes_disk = 0;
  uint64_t spills_total = 0;
  uint64_t loads_total = 0;
  uint64_t adoptions_total = 0;
  uint64_t migrations_peer_total = 0;
  uint64_t migrations_disk_total = 0;
  uint64_t migration_bytes_peer_total = 0;
  uint64_t migration_bytes_disk_total = 0;
  uint64_t migration_failures_peer_total = 0;
  uint64_t migration_failures_disk_total = 0;
  int64_t state_bytes_host = 0;
  int64_t state_bytes_slot = 0;
  int64_t capacity = 0;
  uint64_t evictions_total = 0;
  uint64_t expiries_total = 0;
  uint64_t exports_total = 0;
  uint64_t export_bytes_total = 0;
  uint64_t imports_total = 0;
  uint64_t import_bytes_total = 0;
  uint64_t import_failures_total = 0;
  int prefix_entries = 0;
  int64_t prefix_bytes = 0;
  uint64_t prefix_queries_total = 0;
  uint64_t prefix_hits_total = 0;
  uint64_t prefix_cached_tokens_total = 0;
  // Tokens at which a saved state can be resumed (1 = any token).
  int reuse_block_tokens = 1;
};

// Called on a scrape thread; must be thread-safe and quick.
using SessionSnapshotSource = std::function<SessionSnapshot()>;

class SessionCollector final : public prometheus::Collectable {
 public:
  // Replaces the source; an empty function removes it. When this returns no
  // scrape uses the previous source any more.
  void SetSource(SessionSnapshotSource source);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable absl::Mutex mutex_;
  SessionSnapshotSource source_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_SESSION_COLLECTOR_H_
