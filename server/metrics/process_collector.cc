#include "server/metrics/process_collector.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/base/status_macros.h"

namespace tvq::metrics {
namespace {

absl::StatusOr<std::string> ReadFile(const char* path) {
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(
        absl::StrFormat("cannot open %s: %s", path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// Entries of /proc/self/fd (the descriptor used to read it included, as
// Prometheus's collectors count it).
absl::StatusOr<int> CountOpenFds() {
  DIR* directory = opendir("/proc/self/fd");
  if (directory == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("cannot open /proc/self/fd: %s", std::strerror(errno)));
  }
  int count = 0;
  while (const dirent* entry = readdir(directory)) {
    if (std::strcmp(entry->d_name, ".") != 0 &&
        std::strcmp(entry->d_name, "..") != 0) {
      ++count;
    }
  }
  closedir(directory);
  return count;
}

prometheus::MetricFamily OneValueFamily(std::string name, std::string help,
                                        prometheus::MetricType type,
                                        double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

absl::StatusOr<ProcessStats> ParseProcStat(const std::string& stat_text,
                                           double clock_ticks,
                                           double page_bytes) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields start after the last ')'.
  const size_t comm_end = stat_text.rfind(')');
  if (comm_end == std::string::npos) {
    return absl::DataLossError(
        "/proc/self/stat: no ')' closing the command name");
  }
  const std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat_text).substr(comm_end + 1), ' ',
                     absl::SkipWhitespace());
  // fields[0] is field 3 (state) of proc(5): field n is fields[n - 3].
  constexpr int kUtime = 14 - 3, kStime = 15 - 3, kStartTime = 22 - 3,
                kVsize = 23 - 3, kRss = 24 - 3;
  if (fields.size() <= static_cast<size_t>(kRss)) {
    return absl::DataLossError(absl::StrFormat(
        "/proc/self/stat: %d fields after the command name, expected at "
        "least %d",
        fields.size(), kRss + 1));
  }
  auto number = [&](int index, const char* name) -> absl::StatusOr<double> {
    double value = 0;
    if (!absl::SimpleAtod(fields[index], &value)) {
      return absl::DataLossError(
          absl::StrFormat("/proc/self/stat: field %s is not a number: \"%s\"",
                          name, fields[index]));
    }
    return value;
  };
  ProcessStats stats;
  TVQ_ASSIGN_OR_RETURN(const double utime, number(kUtime, "utime"));
  TVQ_ASSIGN_OR_RETURN(const double stime, number(kStime, "stime"));
  TVQ_ASSIGN_OR_RETURN(const double start, number(kStartTime, "starttime"));
  TVQ_ASSIGN_OR_RETURN(stats.virtual_memory_bytes, number(kVsize, "vsize"));
  TVQ_ASSIGN_OR_RETURN(const double rss_pages, number(kRss, "rss"));
  stats.cpu_seconds = (utime + stime) / clock_ticks;
  stats.start_time_seconds = start / clock_ticks;
  stats.resident_memory_bytes = rss_pages * page_bytes;
  return stats;
}

absl::StatusOr<int64_t> ParseBootTime(const std::string& proc_stat_text) {
  for (absl::string_view line : absl::StrSplit(proc_stat_text, '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    int64_t boot_time = 0;
    if (!absl::SimpleAtoi(line, &boot_time)) {
      return absl::DataLossError(
          absl::StrFormat("/proc/stat: btime is not a number: \"%s\"", line));
    }
    return boot_time;
  }
  return absl::DataLossError("/proc/stat: no btime line");
}

absl::StatusOr<ProcessStats> ReadProcessStats() {
  const long clock_ticks = sysconf(_SC_CLK_TCK);
  const long page_bytes = sysconf(_SC_PAGESIZE);
  if (clock_ticks <= 0 || page_bytes <= 0) {
    return absl::InternalError(absl::StrFormat(
        "sysconf: clock ticks %d, page size %d", clock_ticks, page_bytes));
  }
  TVQ_ASSIGN_OR_RETURN(const std::string stat_text,
                       ReadFile("/proc/self/stat"));
  TVQ_ASSIGN_OR_RETURN(
      ProcessStats stats,
      ParseProcStat(stat_text, static_cast<double>(clock_ticks),
                    static_cast<double>(page_bytes)));
  TVQ_ASSIGN_OR_RETURN(const std::string proc_stat_text,
                       ReadFile("/proc/stat"));
  TVQ_ASSIGN_OR_RETURN(const int64_t boot_time, ParseBootTime(proc_stat_text));
  stats.start_time_seconds += static_cast<double>(boot_time);
  TVQ_ASSIGN_OR_RETURN(const int open_fds, CountOpenFds());
  stats.open_fds = open_fds;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrFormat("getrlimit(RLIMIT_NOFILE): %s", std::strerror(errno)));
  }
  stats.max_fds = limit.rlim_cur == RLIM_INFINITY
                      ? std::numeric_limits<double>::infinity()
                      : static_cast<double>(limit.rlim_cur);
  return stats;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  absl::StatusOr<ProcessStats> stats = ReadProcessStats();
  if (!stats.ok()) return {};
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  families.push_back(
      OneValueFamily("process_cpu_seconds_total",
                     "Total user and system CPU time spent, in seconds.",
                     MetricType::Counter, stats->cpu_seconds));
  families.push_back(OneValueFamily(
      "process_resident_memory_bytes", "Resident memory size in bytes.",
      MetricType::Gauge, stats->resident_memory_bytes));
  families.push_back(OneValueFamily(
      "process_virtual_memory_bytes", "Virtual memory size in bytes.",
      MetricType::Gauge, stats->virtual_memory_bytes));
  families.push_back(OneValueFamily("process_open_fds",
                                    "Number of open file descriptors.",
                                    MetricType::Gauge, stats->open_fds));
  families.push_back(OneValueFamily("process_max_fds",
                                    "Maximum number of open file descriptors.",
                                    MetricType::Gauge, stats->max_fds));
  families.push_back(OneValueFamily(
      "process_start_time_seconds",
      "Start time of the process since the Unix epoch, in seconds.",
      MetricType::Gauge, stats->start_time_seconds));
  return families;
}

}  // namespace tvq::metrics
