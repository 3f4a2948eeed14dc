// A CPU emulator for the kernel sources of kernels/cuda, so that their logic
// (indexing, bounds, barriers, warp shuffles, reductions) is exercised on
// machines without a GPU, CI included. Every CUDA thread of a block runs as a
// fiber on the calling thread; __syncthreads and warp operations are
// scheduling points, and a barrier that can never complete (a divergent
// __syncthreads, a shuffle with some lanes elsewhere or exited) fails the
// launch instead of hanging. It checks logic only: not the compiler, the
// memory model, coalescing or timing. Blocks run one after another, which is
// one legal CUDA schedule.
//
// Include this header, then a kernel source (kernels/cuda/*.cu), in a C++
// translation unit of its own.
#ifndef TVQ_TESTS_KERNELS_CUDA_EMULATOR_H_
#define TVQ_TESTS_KERNELS_CUDA_EMULATOR_H_

#define TVQ_CUDA_EMULATION 1

#include <cuda_runtime_api.h>  // cudaError_t, cudaStream_t, dim3, float4

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <utility>

namespace tvq::emu {

const dim3& ThreadIndex();
const dim3& BlockIndex();
const dim3& BlockDim();
const dim3& GridDim();
void* DynamicShared();
void SyncThreads();
int LaneId();
// Publishes `bits` for the warp and returns those of lane `source_lane`.
uint64_t WarpExchange(uint64_t bits, int source_lane);
unsigned Ballot(unsigned mask, bool predicate);

template <typename T>
T ShflXor(unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  (void)mask;
  (void)width;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = WarpExchange(bits, LaneId() ^ lane_mask);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

template <typename T>
T Shfl(unsigned mask, T value, int source_lane, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  (void)mask;
  (void)width;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = WarpExchange(bits, source_lane);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

// Runs `body` as every thread of every block; on failure records a launch
// error (returned by GetLastError) with a message (LastErrorMessage).
void RunGrid(dim3 grid, dim3 block, size_t shared_bytes,
             const std::function<void()>& body);

// The launch status since the last call, then cudaSuccess.
cudaError_t GetLastError();
// What made the last failed launch fail.
std::string LastErrorMessage();
// Kernel launches so far (tests check that a path really launched).
int64_t LaunchCount();

template <typename Kernel>
cudaError_t FuncSetAttribute(Kernel, cudaFuncAttribute, int value) {
  return value <= 227 * 1024 ? cudaSuccess : cudaErrorInvalidValue;
}

template <typename... Params>
class Launcher {
 public:
  Launcher(void (*kernel)(Params...), dim3 grid, dim3 block,
           size_t shared_bytes)
      : kernel_(kernel), grid_(grid), block_(block), shared_(shared_bytes) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    // Arguments are converted once, as a real launch copies them.
    const std::tuple<Params...> copies(static_cast<Params>(args)...);
    RunGrid(grid_, block_, shared_, [&] { std::apply(kernel_, copies); });
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t shared_;
};

template <typename... Params>
Launcher<Params...> Launch(void (*kernel)(Params...), dim3 grid, dim3 block,
                           size_t shared_bytes, cudaStream_t /*stream*/) {
  return Launcher<Params...>(kernel, grid, block, shared_bytes);
}

}  // namespace tvq::emu

// host_defines.h leaves these empty for a host compiler; shared memory
// becomes function-static (blocks run one at a time).
#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define threadIdx (::tvq::emu::ThreadIndex())
#define blockIdx (::tvq::emu::BlockIndex())
#define blockDim (::tvq::emu::BlockDim())
#define gridDim (::tvq::emu::GridDim())
#define __syncthreads() ::tvq::emu::SyncThreads()
#define __shfl_xor_sync ::tvq::emu::ShflXor
#define __shfl_sync ::tvq::emu::Shfl
#define __ballot_sync ::tvq::emu::Ballot
#define __popc(x) __builtin_popcount(x)
#define cudaGetLastError ::tvq::emu::GetLastError
#define cudaFuncSetAttribute ::tvq::emu::FuncSetAttribute
#define TVQ_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  ::tvq::emu::Launch(kernel, grid, block, shared_bytes, stream)
#define TVQ_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::tvq::emu::DynamicShared())

#endif  // TVQ_TESTS_KERNELS_CUDA_EMULATOR_H_
