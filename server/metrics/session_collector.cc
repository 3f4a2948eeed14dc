#include "server/metrics/session_collector.h"

#include <string>
#include <utility>

namespace tvq::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddGauge(MetricFamily& family, std::vector<ClientMetric::Label> labels,
              double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

MetricFamily Gauge(std::string name, std::string help, double value) {
  MetricFamily family =
      Family(std::move(name), std::move(help), MetricType::Gauge);
  AddGauge(family, {}, value);
  return family;
}

// A counter family with one series per value of label `label`.
MetricFamily LabeledCounter(
    std::string name, std::string help, const std::string& label,
    const std::vector<std::pair<std::string, uint64_t>>& values) {
  MetricFamily family =
      Family(std::move(name), std::move(help), MetricType::Counter);
  for (const auto& [value_label, value] : values) {
    ClientMetric metric;
    metric.label = {{label, value_label}};
    metric.counter.value = static_cast<double>(value);
    family.metric.push_back(std::move(metric));
  }
  return family;
}

MetricFamily Counter(std::string name, std::string help, uint64_t value) {
  MetricFamily family =
      Family(std::move(name), std::move(help), MetricType::Counter);
  ClientMetric metric;
  metric.counter.value = static_cast<double>(value);
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

void SessionCollector::SetSource(SessionSnapshotSource source) {
  absl::MutexLock lock(&mutex_);
  source_ = std::move(source);
}

std::vector<MetricFamily> SessionCollector::Collect() const {
  SessionSnapshot s;
  {
    absl::MutexLock lock(&mutex_);
    if (!source_) return {};
    s = source_();
  }
  std::vector<MetricFamily> families;
  MetricFamily sessions =
      Family("tvq_sessions",
             "Sessions by tier: host (saved between requests), slot (a request "
             "runs on it) or disk (--session-dir).",
             MetricType::Gauge);
  AddGauge(sessions, {{"tier", "host"}}, s.sessions_host);
  AddGauge(sessions, {{"tier", "slot"}}, s.sessions_slot);
  AddGauge(sessions, {{"tier", "disk"}}, s.sessions_disk);
  families.push_back(std::move(sessions));

  MetricFamily bytes =
      Family("tvq_session_state_bytes",
             "Bytes of the sessions' saved states by tier.", MetricType::Gauge);
  AddGauge(bytes, {{"tier", "host"}}, static_cast<double>(s.state_bytes_host));
  AddGauge(bytes, {{"tier", "slot"}}, static_cast<double>(s.state_bytes_slot));
  AddGauge(bytes, {{"tier", "disk"}}, static_cast<double>(s.state_bytes_disk));
  families.push_back(std::move(bytes));

  families.push_back(Gauge("tvq_sessions_pinned",
                           "Pinned sessions (never evicted, never expire).",
                           s.pinned));
  families.push_back(Gauge(
      "tvq_session_capacity",
      "Sessions the session memory budget holds (--session-memory-bytes / "
      "bytes per saved state).",
      static_cast<double>(s.capacity)));
  families.push_back(Counter(
      "tvq_session_evictions_total",
      "Sessions evicted (least recently used, idle, unpinned) because the "
      "session memory budget was full.",
      s.evictions_total));
  families.push_back(Counter("tvq_session_expiries_total",
                             "Sessions closed after idling past their TTL.",
                             s.expiries_total));
  families.push_back(
      Counter("tvq_session_spills_total",
              "Sessions written to --session-dir (evicted from memory, or at "
              "shutdown).",
              s.spills_total));
  families.push_back(Counter("tvq_session_loads_total",
                             "Sessions read back from --session-dir.",
                             s.loads_total));
  families.push_back(Counter(
      "tvq_session_adoptions_total",
      "Of the loads: sessions this server did not hold, taken from a shared "
      "--session-dir (written by another server: drained or evicted).",
      s.adoptions_total));
  families.push_back(LabeledCounter(
      "tvq_session_migrations_total",
      "Sessions migrated on drain, by target (peer: --drain-peer took it; "
      "disk: saved to --session-dir).",
      "target",
      {{"peer", s.migrations_peer_total}, {"disk", s.migrations_disk_total}}));
  families.push_back(LabeledCounter(
      "tvq_session_migration_bytes_total",
      "Bytes moved by migrations on drain, by target (blob bytes sent to the "
      "peer, file bytes written to --session-dir).",
      "target",
      {{"peer", s.migration_bytes_peer_total},
       {"disk", s.migration_bytes_disk_total}}));
  families.push_back(LabeledCounter(
      "tvq_session_migration_failures_total",
      "Migrations on drain that failed, by target (peer: refused or timed "
      "out, then tried on disk; disk: the write failed, the session is lost).",
      "target",
      {{"peer", s.migration_failures_peer_total},
       {"disk", s.migration_failures_disk_total}}));
  families.push_back(Counter("tvq_session_exports_total",
                             "Sessions exported (ExportSession).",
                             s.exports_total));
  families.push_back(Counter("tvq_session_export_bytes_total",
                             "Bytes of exported session blobs.",
                             s.export_bytes_total));
  families.push_back(Counter("tvq_session_imports_total",
                             "Sessions imported (ImportSession).",
                             s.imports_total));
  families.push_back(Counter("tvq_session_import_bytes_total",
                             "Bytes of imported session blobs.",
                             s.import_bytes_total));
  families.push_back(Counter(
      "tvq_session_import_failures_total",
      "Session blobs refused on import (corrupt, truncated, another model, "
      "unknown version, invalid state, id taken, budget full).",
      s.import_failures_total));

  families.push_back(
      Gauge("tvq_prefix_cache_entries",
            "End-of-request states retained for automatic prefix reuse.",
            s.prefix_entries));
  families.push_back(Gauge("tvq_prefix_cache_bytes",
                           "Bytes of the states retained for prefix reuse.",
                           static_cast<double>(s.prefix_bytes)));
  families.push_back(
      Counter("tvq_prefix_cache_queries_total",
              "Requests without a session looked up for a retained prefix.",
              s.prefix_queries_total));
  families.push_back(
      Counter("tvq_prefix_cache_hits_total",
              "Requests that resumed from a retained end-of-request state.",
              s.prefix_hits_total));
  families.push_back(
      Counter("tvq_prefix_cache_cached_tokens_total",
              "Prompt tokens not recomputed thanks to prefix reuse.",
              s.prefix_cached_tokens_total));

  MetricFamily cache = Family(
      "tvq_cache_config_info",
      "Reuse configuration for the inference gateway's prefix scorer: "
      "block_size = tokens of reuse granularity (1: a saved state resumes at "
      "any token), num_gpu_blocks = states that can be retained (the session "
      "capacity). Value 1.",
      MetricType::Gauge);
  AddGauge(cache,
           {{"block_size", std::to_string(s.reuse_block_tokens)},
            {"num_gpu_blocks", std::to_string(s.capacity)}},
           1);
  families.push_back(std::move(cache));
  return families;
}

}  // namespace tvq::metrics
