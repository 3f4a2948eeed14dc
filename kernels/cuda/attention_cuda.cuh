// Transformer-VQ attention against the constant-size state on CUDA (spec
// §2-3), with the masking and "bubble" rules of kernels/cpu/attention_cpu.
#ifndef TVQ_KERNELS_CUDA_ATTENTION_CUDA_CUH_
#define TVQ_KERNELS_CUDA_ATTENTION_CUDA_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_types.h"

namespace tvq::kernels::cuda {

// ---- decode: one query per slot

// Floats of scratch DecodeAttention needs for `batch` queries when it aims
// at `target_blocks` blocks (e.g. twice the SM count) per value pass.
size_t DecodeAttentionScratchFloats(const AttentionShape& dims, int batch,
                                    int target_blocks);

// Query b (q + b * q_stride, [H, d_k]) of slot slots[b] at positions[b]
// (device arrays of `batch` distinct slots) attends to the slot's window
// (distance M - ((m - position) mod M)), to itself (codes[b * H + h], value
// values + b * value_stride + h * d_v) and, with agg_cache, to the codes
// with a nonzero count (score + log count, value = mean). Code scores are
// computed once per query; window scores are gathers of them. Writes out
// [batch, H * d_v]. The state is read only.
cudaError_t DecodeAttention(const AttentionShape& dims,
                            const AttentionTables& tables,
                            const SublayerState& state, const int32_t* slots,
                            const int64_t* positions, int batch, const float* q,
                            int q_stride, const int32_t* codes,
                            const float* values, int value_stride, float* out,
                            float* scratch, int target_blocks,
                            cudaStream_t stream);

// ---- prefill: a block of n queries of one slot, the kernel steps of
// block_attention_cuda.cuh (which composes them): it computes, per head,
// code_scores = qu C^T and relative_scores = qv R^T (fp32 GEMMs), and
// afterwards out = W[:, :M] window_values + W[:, M:M+n] values +
// W[:, M+n:] means (the last only with agg_cache).

// Width of a row of BlockAttentionWeights' output: M + n + S.
inline int BlockWeightsWidth(const AttentionShape& dims, int n) {
  return dims.mem_len + n + dims.n_code;
}

// qu[h, i, :] = q[i, h, :] + u[h, :] and qv[h, i, :] = q[i, h, :] + v[h, :]
// for the n rows of q (row stride q_stride); qu, qv are [H, n, d_k].
cudaError_t PrepareBlockQueries(const AttentionShape& dims, int n,
                                const float* q, int q_stride, const float* u,
                                const float* v, float* qu, float* qv,
                                cudaStream_t stream);

// Softmax weights of query i (position first_position + i) of slot `slot`
// over [its M window slots | the block's n keys | the S codes], written to
// weights [H, n, M + n + S] (excluded entries 0). code_scores [H, n, S],
// relative_scores [H, n, M + 1]; the block's codes are codes[j * H + h].
cudaError_t BlockAttentionWeights(const AttentionShape& dims,
                                  const SublayerState& state, int slot,
                                  int64_t first_position, int n,
                                  const float* code_scores,
                                  const float* relative_scores,
                                  const int32_t* codes, float* weights,
                                  cudaStream_t stream);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_ATTENTION_CUDA_CUH_
