#include "server/process/resource_limits.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace tvq::process {
namespace {

int64_t AsInt(rlim_t value) {
  return value == RLIM_INFINITY ? -1 : static_cast<int64_t>(value);
}

}  // namespace

FileDescriptorLimit RaiseFileDescriptorLimit() {
  FileDescriptorLimit result;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    result.error = std::strerror(errno);
    return result;
  }
  result.before = AsInt(limit.rlim_cur);
  result.hard = AsInt(limit.rlim_max);
  result.after = result.before;
  if (limit.rlim_cur == limit.rlim_max) return result;
  rlimit raised = limit;
  raised.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
    result.error = std::strerror(errno);
    return result;
  }
  result.after = AsInt(raised.rlim_cur);
  return result;
}

}  // namespace tvq::process
