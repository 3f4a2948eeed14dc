// Finding and dlopen'ing the project's own plug-in modules
// (libtvq_sentencepiece.so, libtvq_cuda_backend.so).
//
// Some libraries cannot be linked into the server: Debian's libsentencepiece
// exports its own protobuf, and cuBLASLt's 94 KB of static TLS makes the
// small fixed thread stacks of civetweb (under prometheus-cpp) too small for
// pthread_create. Loaded with dlopen, their TLS is dynamic and their symbols
// stay local.
#ifndef TVQ_SERVER_BASE_SHARED_MODULE_H_
#define TVQ_SERVER_BASE_SHARED_MODULE_H_

#include <string>

#include "absl/status/statusor.h"

namespace tvq::runtime {

struct SharedModuleSpec {
  // File name, e.g. "libtvq_cuda_backend.so".
  std::string file_name;
  // Environment variable that overrides the search with a path.
  std::string environment_variable;
  // Path of the module in the build tree (compile-time), may be empty.
  std::string build_path;
  // RTLD_DEEPBIND: resolve the module's own symbols first.
  bool deep_bind = false;
};

// Opens the module from, in order: $environment_variable, the executable's
// directory, <executable dir>/../lib, build_path, the dynamic linker's
// search path. FailedPrecondition names every path tried and why it failed.
absl::StatusOr<void*> OpenSharedModule(const SharedModuleSpec& spec);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BASE_SHARED_MODULE_H_
