#include "server/base/shared_module.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tvq::runtime {
namespace {

std::string ExecutableDirectory() {
  char buffer[PATH_MAX];
  const ssize_t length = ::readlink("/proc/self/exe", buffer, sizeof(buffer));
  if (length <= 0) return "";
  const std::string path(buffer, static_cast<size_t>(length));
  return path.substr(0, path.rfind('/'));
}

}  // namespace

absl::StatusOr<void*> OpenSharedModule(const SharedModuleSpec& spec) {
  std::vector<std::string> candidates;
  if (const char* override_path = std::getenv(spec.environment_variable.c_str());
      override_path != nullptr && override_path[0] != '\0') {
    candidates.push_back(override_path);
  }
  const std::string directory = ExecutableDirectory();
  if (!directory.empty()) {
    candidates.push_back(absl::StrCat(directory, "/", spec.file_name));
    candidates.push_back(absl::StrCat(directory, "/../lib/", spec.file_name));
  }
  if (!spec.build_path.empty()) candidates.push_back(spec.build_path);
  candidates.push_back(spec.file_name);

  const int flags = RTLD_NOW | RTLD_LOCAL | (spec.deep_bind ? RTLD_DEEPBIND : 0);
  std::vector<std::string> failures;
  for (const std::string& candidate : candidates) {
    if (candidate.find('/') != std::string::npos &&
        ::access(candidate.c_str(), R_OK) != 0) {
      failures.push_back(absl::StrCat(candidate, " (missing)"));
      continue;
    }
    void* module = ::dlopen(candidate.c_str(), flags);
    if (module != nullptr) return module;
    const char* error = ::dlerror();
    failures.push_back(
        absl::StrCat(candidate, " (", error != nullptr ? error : "?", ")"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot load ", spec.file_name, "; tried: ", absl::StrJoin(failures, ", "),
      ". Set ", spec.environment_variable, " to its path."));
}

}  // namespace tvq::runtime
