// TestDevice() on the CPU emulator: host memory, always available.
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/kernels/cuda_emulator.h"
#include "tests/kernels/cuda_test_device.h"

namespace tvq::kernels::cuda::testing {
namespace {

class EmulatedDevice final : public KernelTestDevice {
 public:
  std::string Unavailable() override { return ""; }
  void* Allocate(size_t bytes) override {
    // 256-byte aligned like cudaMalloc, so the vectorized paths are taken.
    return std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  }
  void Free(void* pointer) override { std::free(pointer); }
  bool Upload(void* device, const void* host, size_t bytes) override {
    std::memcpy(device, host, bytes);
    return true;
  }
  bool Download(void* host, const void* device, size_t bytes) override {
    std::memcpy(host, device, bytes);
    return true;
  }
  cudaError_t Synchronize() override { return cudaSuccess; }
  std::string ErrorText(cudaError_t error) override {
    return "emulated launch failed (error " + std::to_string(error) +
           "): " + ::tvq::emu::LastErrorMessage();
  }
};

}  // namespace

KernelTestDevice& TestDevice() {
  static EmulatedDevice* device = new EmulatedDevice();
  return *device;
}

}  // namespace tvq::kernels::cuda::testing
