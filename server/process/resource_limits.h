// Resource limits of the tvq-server process.
#ifndef TVQ_SERVER_PROCESS_RESOURCE_LIMITS_H_
#define TVQ_SERVER_PROCESS_RESOURCE_LIMITS_H_

#include <cstdint>
#include <string>

namespace tvq::process {

struct FileDescriptorLimit {
  // The soft limit before and after, and the hard limit (-1 = unlimited).
  int64_t before = 0;
  int64_t after = 0;
  int64_t hard = 0;
  // Empty, or why the limit could not be raised.
  std::string error;
};

// Raises the soft RLIMIT_NOFILE to the hard limit: every connection takes a
// descriptor, and the default soft limit (often 1024) is far below what a
// server may be allowed.
FileDescriptorLimit RaiseFileDescriptorLimit();

}  // namespace tvq::process

#endif  // TVQ_SERVER_PROCESS_RESOURCE_LIMITS_H_
