// The one place that knows which backends this build has.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "server/backend/backend.h"
#include "server/backend/cpu/cpu_backend.h"
#ifdef TVQ_WITH_CUDA
#include <dlfcn.h>

#include "server/base/shared_module.h"
#endif

namespace tvq::runtime {
namespace {

struct DeviceRequest {
  enum class Kind { kAuto, kCpu, kCuda } kind = Kind::kAuto;
  int cuda_ordinal = 0;
};

absl::StatusOr<DeviceRequest> ParseDevice(const std::string& device) {
  DeviceRequest request;
  if (device == "auto") return request;
  if (device == "cpu") {
    request.kind = DeviceRequest::Kind::kCpu;
    return request;
  }
  if (device == "cuda") {
    request.kind = DeviceRequest::Kind::kCuda;
    return request;
  }
  if (absl::StartsWith(device, "cuda:") &&
      absl::SimpleAtoi(device.substr(5), &request.cuda_ordinal) &&
      request.cuda_ordinal >= 0) {
    request.kind = DeviceRequest::Kind::kCuda;
    return request;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "--device must be auto, cpu, cuda or cuda:N, got \"%s\"", device));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    const BackendOptions& options, int ordinal) {
#ifdef TVQ_WITH_CUDA
  // libtvq_cuda_backend.so: loaded once, kept for the process.
  using CreateFunction = void (*)(const BackendOptions*, int,
                                  absl::StatusOr<std::unique_ptr<Backend>>*);
  static const absl::StatusOr<CreateFunction> create =
      []() -> absl::StatusOr<CreateFunction> {
    absl::StatusOr<void*> module =
        OpenSharedModule({.file_name = "libtvq_cuda_backend.so",
                          .environment_variable = "TVQ_CUDA_BACKEND_MODULE",
                          .build_path = TVQ_CUDA_BACKEND_MODULE_PATH});
    if (!module.ok()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "--device=cuda: the CUDA backend module cannot be loaded: %s",
          module.status().message()));
    }
    void* symbol = ::dlsym(*module, "tvq_create_cuda_backend");
    if (symbol == nullptr) {
      return absl::FailedPreconditionError(
          "--device=cuda: libtvq_cuda_backend.so lacks "
          "tvq_create_cuda_backend (a stale build?)");
    }
    return reinterpret_cast<CreateFunction>(symbol);
  }();
  if (!create.ok()) return create.status();
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      absl::UnknownError("not created");
  (*create)(&options, ordinal, &backend);
  return backend;
#else
  (void)options;
  (void)ordinal;
  return absl::UnimplementedError(
      "--device=cuda: this build has no CUDA support (configure with "
      "-DTVQ_WITH_CUDA=ON); use --device=cpu");
#endif
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    const BackendOptions& options) {
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--threads must be >= 0 (0 = all cores), got %d", options.num_threads));
  }
  absl::StatusOr<DeviceRequest> request = ParseDevice(options.device);
  if (!request.ok()) return request.status();
  switch (request->kind) {
    case DeviceRequest::Kind::kCuda:
      return MakeCudaBackend(options, request->cuda_ordinal);
    case DeviceRequest::Kind::kAuto: {
      absl::StatusOr<std::unique_ptr<Backend>> cuda =
          MakeCudaBackend(options, 0);
      if (cuda.ok()) return cuda;
      [[fallthrough]];
    }
    case DeviceRequest::Kind::kCpu:
      return std::make_unique<CpuBackend>(options.num_threads);
  }
  return absl::InternalError("unreachable device kind");
}

}  // namespace tvq::runtime
