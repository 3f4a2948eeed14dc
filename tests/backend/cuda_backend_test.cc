// CudaBackend's memory operations and the backend factory's answers on a
// machine without a GPU (those run here). The ops themselves are checked,
// against float64 references and against the CPU backend, by the backend
// conformance suite (backend_conformance_test.cc). Every GPU case skips with
// the CUDA error when no device is usable.
#include "server/backend/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/backend/backend.h"

namespace tvq::runtime {
namespace {

// The reason CUDA cannot be used here, or "" when it can.
std::string CudaUnavailable() {
  static const std::string* reason = [] {
    absl::StatusOr<std::unique_ptr<CudaBackend>> backend =
        CudaBackend::Create(0);
    return new std::string(
        backend.ok() ? "" : std::string(backend.status().message()));
  }();
  return *reason;
}

TEST(CudaBackendFactory, CudaWithoutAGpuIsAFailedPreconditionNamingTheCause) {
  if (CudaUnavailable().empty()) GTEST_SKIP() << "a GPU is present";
  for (const std::string device : {"cuda", "cuda:0", "cuda:3"}) {
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        CreateBackend({.device = device});
    ASSERT_FALSE(backend.ok()) << device;
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition)
        << backend.status();
    EXPECT_NE(backend.status().message().find("no usable CUDA device"),
              std::string::npos)
        << backend.status();
  }
}

TEST(CudaBackendFactory, AutoFallsBackToTheCpuWithoutAGpu) {
  if (CudaUnavailable().empty()) GTEST_SKIP() << "a GPU is present";
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend({.device = "auto", .num_threads = 1});
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->device(), DeviceKind::kCpu);
}

TEST(CudaBackendFactory, AutoPicksCudaWithAGpu) {
  if (!CudaUnavailable().empty()) GTEST_SKIP() << CudaUnavailable();
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend({.device = "auto"});
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->device(), DeviceKind::kCuda);
  EXPECT_NE((*backend)->DeviceName().find("cuda:0"), std::string::npos);
  absl::StatusOr<std::unique_ptr<Backend>> missing =
      CreateBackend({.device = "cuda:999"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = CudaUnavailable(); !why.empty()) {
      GTEST_SKIP() << "no CUDA device: " << why;
    }
    cuda_ = CudaBackend::Create(0).value();
  }

  std::vector<float> Floats(size_t n, float low = -1, float high = 1) {
    std::uniform_real_distribution<float> distribution(low, high);
    std::vector<float> values(n);
    for (float& value : values) value = distribution(engine_);
    return values;
  }

  // A copy of `host` in the memory of `backend` (CPU: plain memory).
  template <typename T>
  DeviceBuffer On(Backend& backend, const std::vector<T>& host) {
    DeviceBuffer buffer =
        backend.Allocate(sizeof(T) * std::max<size_t>(host.size(), 1)).value();
    EXPECT_TRUE(
        backend.CopyToDevice(buffer.get(), host.data(), sizeof(T) * host.size())
            .ok());
    return buffer;
  }
  template <typename T>
  std::vector<T> Read(Backend& backend, const DeviceBuffer& buffer,
                      size_t count) {
    std::vector<T> host(count);
    const absl::Status status =
        backend.CopyToHost(host.data(), buffer.get(), sizeof(T) * count);
    EXPECT_TRUE(status.ok()) << status;
    return host;
  }

  std::mt19937 engine_{2024};
  std::unique_ptr<CudaBackend> cuda_;
};

TEST_F(CudaBackendTest, MemoryOperations) {
  DeviceBuffer zeroed = cuda_->Allocate(1000).value();
  std::vector<unsigned char> bytes(1000, 7);
  ASSERT_TRUE(cuda_->CopyToHost(bytes.data(), zeroed.get(), 1000).ok());
  EXPECT_EQ(bytes, std::vector<unsigned char>(1000, 0))
      << "allocations are zeroed";

  const std::vector<float> values = Floats(300);
  DeviceBuffer a = On(*cuda_, values);
  DeviceBuffer b = cuda_->Allocate(sizeof(float) * 300).value();
  ASSERT_TRUE(cuda_->CopyOnDevice(b.get(), a.get(), sizeof(float) * 300).ok());
  EXPECT_EQ(Read<float>(*cuda_, b, 300), values);
  EXPECT_EQ(cuda_->CopyOnDevice(a.as<float>() + 1, a.get(), sizeof(float) * 10)
                .code(),
            absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(cuda_->Fill(b.as<float>() + 5, 100, -2.5f).ok());
  std::vector<float> filled = values;
  std::fill_n(filled.begin() + 5, 100, -2.5f);
  EXPECT_EQ(Read<float>(*cuda_, b, 300), filled);
  ASSERT_TRUE(cuda_->FillInt(b.as<int32_t>(), 7, -1).ok());
  EXPECT_EQ(Read<int32_t>(*cuda_, b, 8)[6], -1);

  DeviceBuffer storage;
  const TensorView weights =
      cuda_
          ->UploadWeights(
              F32(values.data(), {static_cast<int64_t>(values.size())}),
              &storage)
          .value();
  EXPECT_EQ(weights.dtype, DType::kF32);
  EXPECT_EQ(weights.elements(), static_cast<int64_t>(values.size()));
  std::vector<float> back(values.size());
  ASSERT_TRUE(
      cuda_->CopyToHost(back.data(), weights.data, sizeof(float) * back.size())
          .ok());
  EXPECT_EQ(back, values);
  ASSERT_TRUE(cuda_->Synchronize().ok());
}

}  // namespace
}  // namespace tvq::runtime
