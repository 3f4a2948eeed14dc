#include "server/core/memory_budget.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace tvq::core {
namespace {

// The first number in `path`, or -1 ("max", unreadable).
int64_t ReadNumber(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text)) return -1;
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) return -1;
  return value;
}

// "kB" figures of /proc/meminfo.
int64_t MemInfoBytes(const char* key) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  int64_t kilobytes = 0;
  std::string unit;
  while (in >> name >> kilobytes) {
    std::getline(in, unit);
    if (name == key) return kilobytes * 1024;
  }
  return -1;
}

double GiB(int64_t bytes) { return static_cast<double>(bytes) / (1 << 30); }

}  // namespace

MemoryNeeds EstimateMemoryNeeds(const runtime::ModelConfig& config,
                                int num_slots, int64_t bytes_per_slot) {
  MemoryNeeds needs;
  int64_t weight_elements = 0;
  for (const runtime::TensorSpec& spec : runtime::ExpectedTensors(config)) {
    int64_t elements = 1;
    for (int64_t size : spec.shape) elements *= size;
    weight_elements += elements;
  }
  needs.weights = 4 * weight_elements;
  const int64_t H = config.n_head, S = config.n_code, M = config.mem_len,
                dk = config.d_k;
  needs.tables = 4 * int64_t{config.num_sublayers()} *
                 (H * (M + 1) * dk + H * S * (dk + 1));
  needs.num_slots = num_slots;
  needs.slots = int64_t{num_slots} * bytes_per_slot;
  return needs;
}

MemoryAvailable ProcessMemoryAvailable() {
  MemoryAvailable available;
  auto consider = [&](int64_t bytes, std::string source) {
    if (bytes >= 0 && bytes < available.bytes) {
      available.bytes = bytes;
      available.source = std::move(source);
    }
  };
  rlimit limit{};
  if (::getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    int64_t in_use = 0;
    if (std::FILE* statm = std::fopen("/proc/self/statm", "re")) {
      long pages = 0;
      if (std::fscanf(statm, "%ld", &pages) == 1) {
        in_use = static_cast<int64_t>(pages) * ::sysconf(_SC_PAGESIZE);
      }
      std::fclose(statm);
    }
    const int64_t cap = static_cast<int64_t>(limit.rlim_cur);
    consider(std::max<int64_t>(0, cap - in_use),
             absl::StrFormat("RLIMIT_AS (ulimit -v) of %.2f GiB, %.2f GiB of "
                             "it in use",
                             GiB(cap), GiB(in_use)));
  }
  // cgroup v2, then v1.
  if (const int64_t max = ReadNumber("/sys/fs/cgroup/memory.max"); max > 0) {
    const int64_t current = ReadNumber("/sys/fs/cgroup/memory.current");
    consider(std::max<int64_t>(0, max - std::max<int64_t>(current, 0)),
             absl::StrFormat("the cgroup's memory.max of %.2f GiB", GiB(max)));
  } else if (const int64_t v1 =
                 ReadNumber("/sys/fs/cgroup/memory/memory.limit_in_bytes");
             v1 > 0 && v1 < (int64_t{1} << 60)) {
    const int64_t usage =
        ReadNumber("/sys/fs/cgroup/memory/memory.usage_in_bytes");
    consider(std::max<int64_t>(0, v1 - std::max<int64_t>(usage, 0)),
             absl::StrFormat("the cgroup's memory limit of %.2f GiB", GiB(v1)));
  }
  if (const int64_t free = MemInfoBytes("MemAvailable:"); free >= 0) {
    consider(free, "the system's available memory (MemAvailable)");
  }
  return available;
}

absl::Status CheckMemoryNeeds(const MemoryNeeds& needs,
                              const MemoryAvailable& available,
                              const runtime::ModelConfig& config) {
  if (needs.total() <= available.bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrFormat(
      "the model needs about %.2f GiB (weights %.2f GiB; position tables "
      "%.2f GiB, set by mem_len = %d in config.json; %d state slots x %.2f "
      "MiB, set by --num-slots / --state-memory-bytes and mem_len, d_v, "
      "n_code) but the process may allocate only %.2f GiB more: %s",
      GiB(needs.total()), GiB(needs.weights), GiB(needs.tables), config.mem_len,
      needs.num_slots,
      needs.num_slots > 0
          ? static_cast<double>(needs.slots) / needs.num_slots / (1 << 20)
          : 0.0,
      GiB(available.bytes), available.source));
}

}  // namespace tvq::core
