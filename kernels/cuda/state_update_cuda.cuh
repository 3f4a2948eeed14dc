// The decode-state update on CUDA (spec §3): evict into count/mean, write
// the window ring. Per head and column the updates happen in token order
// with m' = m + (v - m) / n', n' = n + 1, exactly as
// kernels/cpu/state_update_cpu; heads, codes and columns run in parallel.
#ifndef TVQ_KERNELS_CUDA_STATE_UPDATE_CUDA_CUH_
#define TVQ_KERNELS_CUDA_STATE_UPDATE_CUDA_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_types.h"

namespace tvq::kernels::cuda {

// Int32 scratch UpdateState needs for n tokens.
inline size_t UpdateStateScratchInts(const AttentionShape& dims, int n) {
  return static_cast<size_t>(dims.n_head) * (n > 0 ? n : 0);
}

// Feeds n consecutive tokens (positions first_position.., codes [n, H],
// values + i * value_stride + h * d_v) into the window of `slot`: for each
// token, the one in ring slot p mod M (if any) joins count/mean of its code,
// then the token takes the slot.
cudaError_t UpdateState(const AttentionShape& dims, const SublayerState& state,
                        int slot, int64_t first_position, int n,
                        const int32_t* codes, const float* values,
                        int value_stride, int32_t* scratch,
                        cudaStream_t stream);

// The same for one token per slot of a decode batch: slots, positions are
// device arrays of `batch` distinct slots; codes [batch, H]; values + b *
// value_stride + h * d_v.
cudaError_t UpdateStateBatch(const AttentionShape& dims,
                             const SublayerState& state, const int32_t* slots,
                             const int64_t* positions, int batch,
                             const int32_t* codes, const float* values,
                             int value_stride, cudaStream_t stream);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_STATE_UPDATE_CUDA_CUH_
