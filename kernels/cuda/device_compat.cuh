// The few constructs the kernel sources use for launches and dynamic shared
// memory, spelled so that the same sources also compile as plain C++ under
// the CPU emulator of tests/kernels (which defines TVQ_CUDA_EMULATION and
// provides these macros itself before including a kernel source).
#ifndef TVQ_KERNELS_CUDA_DEVICE_COMPAT_CUH_
#define TVQ_KERNELS_CUDA_DEVICE_COMPAT_CUH_

#include <cuda_runtime_api.h>

#ifndef TVQ_CUDA_EMULATION

// TVQ_LAUNCH(kernel, grid, block, shared_bytes, stream)(arguments...);
// `kernel` must be a single token (take a pointer to a template instance
// first).
#define TVQ_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  kernel<<<(grid), (block), (shared_bytes), (stream)>>>

// Declares `type* name` pointing at the block's dynamic shared memory.
#define TVQ_DYNAMIC_SHARED(type, name)                                 \
  extern __shared__ __align__(16) unsigned char tvq_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(tvq_dynamic_shared_)

#endif  // TVQ_CUDA_EMULATION

namespace tvq::kernels::cuda {

// Threads per block of the row-wise kernels.
inline constexpr int kBlockThreads = 256;
inline constexpr int kWarpSize = 32;
inline constexpr unsigned kFullMask = 0xffffffffu;

// Largest dynamic shared memory a kernel may ask for without opting in.
inline constexpr size_t kDefaultSharedBytes = 48 * 1024;

inline unsigned CeilDiv(long long a, long long b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_DEVICE_COMPAT_CUH_
