// TestDevice() on a real GPU (device 0). Without one, Unavailable() says why.
#include <cuda_runtime_api.h>

#include <string>

#include "tests/kernels/cuda_test_device.h"

namespace tvq::kernels::cuda::testing {
namespace {

std::string Describe(const char* what, cudaError_t error) {
  return std::string(what) + ": " + cudaGetErrorName(error) + " (" +
         cudaGetErrorString(error) + ")";
}

class GpuDevice final : public KernelTestDevice {
 public:
  std::string Unavailable() override {
    if (!checked_) {
      checked_ = true;
      int count = 0;
      const cudaError_t error = cudaGetDeviceCount(&count);
      if (error != cudaSuccess) {
        reason_ = "no CUDA device: " + Describe("cudaGetDeviceCount", error);
      } else if (count == 0) {
        reason_ = "no CUDA device: cudaGetDeviceCount found none";
      } else if (const cudaError_t set = cudaSetDevice(0); set != cudaSuccess) {
        reason_ = "no CUDA device: " + Describe("cudaSetDevice(0)", set);
      }
    }
    return reason_;
  }
  void* Allocate(size_t bytes) override {
    void* pointer = nullptr;
    return cudaMalloc(&pointer, bytes) == cudaSuccess ? pointer : nullptr;
  }
  void Free(void* pointer) override { cudaFree(pointer); }
  bool Upload(void* device, const void* host, size_t bytes) override {
    return cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice) ==
           cudaSuccess;
  }
  bool Download(void* host, const void* device, size_t bytes) override {
    return cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost) ==
           cudaSuccess;
  }
  cudaError_t Synchronize() override { return cudaDeviceSynchronize(); }
  std::string ErrorText(cudaError_t error) override {
    return Describe("launch", error);
  }

 private:
  bool checked_ = false;
  std::string reason_;
};

}  // namespace

KernelTestDevice& TestDevice() {
  static GpuDevice* device = new GpuDevice();
  return *device;
}

}  // namespace tvq::kernels::cuda::testing
