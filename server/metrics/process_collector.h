// Process metrics read from /proc at scrape time, named as Prometheus's own
// process collectors name them (client_golang, client_python), so that
// standard dashboards and alerts work unchanged:
//   process_cpu_seconds_total       counter  user + system CPU seconds
//   process_resident_memory_bytes   gauge    resident set size
//   process_virtual_memory_bytes    gauge    virtual memory size
//   process_open_fds                gauge    open file descriptors
//   process_max_fds                 gauge    RLIMIT_NOFILE soft limit
//   process_start_time_seconds      gauge    start time, seconds since epoch
// Linux only. A value that cannot be read is left out of the scrape.
#ifndef TVQ_SERVER_METRICS_PROCESS_COLLECTOR_H_
#define TVQ_SERVER_METRICS_PROCESS_COLLECTOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace tvq::metrics {

struct ProcessStats {
  double cpu_seconds = 0;
  double resident_memory_bytes = 0;
  double virtual_memory_bytes = 0;
  double start_time_seconds = 0;
  double open_fds = 0;
  // +Inf when unlimited.
  double max_fds = 0;
};

// Reads the calling process's figures from /proc/self/stat, /proc/stat
// (boot time), /proc/self/fd and getrlimit. Errors name the file and what
// was wrong with it.
absl::StatusOr<ProcessStats> ReadProcessStats();

// Parses the text of /proc/<pid>/stat into cpu_seconds, resident and virtual
// memory, and the start time in seconds after boot (stored in
// start_time_seconds; the caller adds the boot time). `clock_ticks` is
// sysconf(_SC_CLK_TCK), `page_bytes` sysconf(_SC_PAGESIZE).
absl::StatusOr<ProcessStats> ParseProcStat(const std::string& stat_text,
                                           double clock_ticks,
                                           double page_bytes);

// Parses "btime N" out of the text of /proc/stat.
absl::StatusOr<int64_t> ParseBootTime(const std::string& proc_stat_text);

class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_PROCESS_COLLECTOR_H_
