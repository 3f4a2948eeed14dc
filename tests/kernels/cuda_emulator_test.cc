// The emulator itself: it must run correct kernels and fail (not hang) on
// the barrier misuse a real GPU would deadlock or misbehave on.
#include "tests/kernels/cuda_emulator.h"
// Kernel-style code below uses the emulator's macros.
#include <gtest/gtest.h>

#include <vector>

namespace tvq::emu {
namespace {

__global__ void BlockSumKernel(const int* input, int* output) {
  __shared__ int partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int value = input[blockIdx.x * blockDim.x + threadIdx.x];
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += partial[w];
    output[blockIdx.x] = total;
  }
}

// Half of each warp shuffles while the other half waits at __syncthreads:
// neither can ever complete.
__global__ void SplitWarpKernel(int* output) {
  if (threadIdx.x % 32 < 16) {
    output[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
  } else {
    __syncthreads();
  }
}

__global__ void ShuffleAfterExitKernel(int* output) {
  if (threadIdx.x % 32 == 5) return;
  output[threadIdx.x] =
      __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

__global__ void BallotKernel(unsigned* output) {
  const unsigned ballot = __ballot_sync(0xffffffffu, threadIdx.x % 3 == 0);
  if (threadIdx.x % 32 == 0) output[threadIdx.x / 32] = ballot;
}

TEST(CudaEmulator, RunsShufflesAndBarriers) {
  std::vector<int> input(3 * 128);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<int>(i);
  std::vector<int> output(3, 0);
  TVQ_LAUNCH(BlockSumKernel, 3, 128, 0, nullptr)(input.data(), output.data());
  ASSERT_EQ(GetLastError(), cudaSuccess) << LastErrorMessage();
  for (int b = 0; b < 3; ++b) {
    int expected = 0;
    for (int i = 0; i < 128; ++i) expected += b * 128 + i;
    EXPECT_EQ(output[b], expected) << "block " << b;
  }
}

TEST(CudaEmulator, BallotCollectsTheWarpsPredicates) {
  std::vector<unsigned> output(2, 0);
  TVQ_LAUNCH(BallotKernel, 1, 64, 0, nullptr)(output.data());
  ASSERT_EQ(GetLastError(), cudaSuccess) << LastErrorMessage();
  unsigned expected0 = 0, expected1 = 0;
  for (int lane = 0; lane < 32; ++lane) {
    if (lane % 3 == 0) expected0 |= 1u << lane;
    if ((lane + 32) % 3 == 0) expected1 |= 1u << lane;
  }
  EXPECT_EQ(output[0], expected0);
  EXPECT_EQ(output[1], expected1);
}

TEST(CudaEmulator, ReportsADeadlockInsteadOfHanging) {
  std::vector<int> output(64, 0);
  TVQ_LAUNCH(SplitWarpKernel, 1, 64, 0, nullptr)(output.data());
  EXPECT_EQ(GetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastErrorMessage().find("deadlock"), std::string::npos)
      << LastErrorMessage();
}

TEST(CudaEmulator, ReportsAShuffleWithExitedLanes) {
  std::vector<int> output(64, 0);
  TVQ_LAUNCH(ShuffleAfterExitKernel, 1, 64, 0, nullptr)(output.data());
  EXPECT_EQ(GetLastError(), cudaErrorLaunchFailure);
  EXPECT_NE(LastErrorMessage().find("exited"), std::string::npos)
      << LastErrorMessage();
}

TEST(CudaEmulator, RejectsBadLaunchConfigurations) {
  std::vector<int> output(1, 0);
  TVQ_LAUNCH(ShuffleAfterExitKernel, 1, 2048, 0, nullptr)(output.data());
  EXPECT_EQ(GetLastError(), cudaErrorInvalidConfiguration);
  TVQ_LAUNCH(ShuffleAfterExitKernel, dim3(1, 70000), 32, 0, nullptr)
  (output.data());
  EXPECT_EQ(GetLastError(), cudaErrorInvalidConfiguration);
}

}  // namespace
}  // namespace tvq::emu
