// Where the CUDA kernel parity cases run: on a GPU (cuda_kernels_test) or on
// the CPU emulator (cuda_kernels_emulated_test). Each binary links one
// definition of TestDevice().
#ifndef TVQ_TESTS_KERNELS_CUDA_TEST_DEVICE_H_
#define TVQ_TESTS_KERNELS_CUDA_TEST_DEVICE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

namespace tvq::kernels::cuda::testing {

class KernelTestDevice {
 public:
  virtual ~KernelTestDevice() = default;
  // Empty when the device can run kernels, else the reason it cannot.
  virtual std::string Unavailable() = 0;
  virtual void* Allocate(size_t bytes) = 0;  // null on failure
  virtual void Free(void* pointer) = 0;
  virtual bool Upload(void* device, const void* host, size_t bytes) = 0;
  virtual bool Download(void* host, const void* device, size_t bytes) = 0;
  // Waits for the launched work; its error, if any.
  virtual cudaError_t Synchronize() = 0;
  virtual std::string ErrorText(cudaError_t error) = 0;
};

KernelTestDevice& TestDevice();

// A device copy of a host vector; Read() copies it back.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : size_(host.size()) {
    pointer_ = static_cast<T*>(TestDevice().Allocate(Bytes()));
    ok_ = pointer_ != nullptr &&
          (host.empty() || TestDevice().Upload(pointer_, host.data(), Bytes()));
  }
  explicit DeviceArray(size_t size, T fill = T())
      : DeviceArray(std::vector<T>(size, fill)) {}
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (pointer_ != nullptr) TestDevice().Free(pointer_);
  }

  bool ok() const { return ok_; }
  T* get() const { return pointer_; }
  std::vector<T> Read() const {
    std::vector<T> host(size_);
    if (size_ > 0 && !TestDevice().Download(host.data(), pointer_, Bytes())) {
      host.clear();
    }
    return host;
  }

 private:
  size_t Bytes() const { return size_ * sizeof(T) + (size_ == 0 ? 4 : 0); }
  size_t size_;
  T* pointer_ = nullptr;
  bool ok_ = false;
};

}  // namespace tvq::kernels::cuda::testing

#endif  // TVQ_TESTS_KERNELS_CUDA_TEST_DEVICE_H_
