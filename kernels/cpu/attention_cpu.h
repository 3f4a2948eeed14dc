// Transformer-VQ attention of one head against its constant-size state
// (spec §2–3) on the CPU.
#ifndef TVQ_KERNELS_CPU_ATTENTION_CPU_H_
#define TVQ_KERNELS_CPU_ATTENTION_CPU_H_

#include <cstdint>

#include "kernels/attention_types.h"

namespace tvq::kernels::cpu {

// One head of one sublayer for one slot: its sizes and the slices of the
// sublayer's tables and state that belong to it (SliceHead makes one).
struct HeadAttention {
  AttentionShape shape;                   // of the whole sublayer
  const float* codebook = nullptr;        // [S, d_k]
  const float* relative = nullptr;        // [M + 1, d_k], row d = r_d
  const float* u = nullptr;               // [d_k]
  const float* v = nullptr;               // [d_k]
  const float* counts = nullptr;          // [S], always float32
  const void* means = nullptr;            // [S, d_v] of state_dtype
  const int32_t* window_codes = nullptr;  // [M], -1 = empty
  const void* window_values = nullptr;    // [M, d_v] of state_dtype
  DType state_dtype = DType::kF32;        // kF32 or kBF16
};

// Head `head` of slot `slot`: pointers offset into `tables` (F32 arrays)
// and `state` (means and window values of state.dtype, F32 or BF16).
HeadAttention SliceHead(const AttentionShape& shape,
                        const AttentionTables& tables,
                        const SublayerState& state, int slot, int head);

// Floats of scratch DecodeAttentionWeights needs.
int DecodeScratchFloats(const HeadAttention& head);
// Weights DecodeAttentionWeights writes: M window slots, the new token, S
// codes.
inline int DecodeWeightCount(const HeadAttention& head) {
  return head.shape.mem_len + 1 + head.shape.n_code;
}

// Softmax weights of the query at `position` (its key code `code`) over the
// window slots, itself and (agg_cache) the codes, normalized; excluded
// entries get 0. Thread-safe, no BLAS.
void DecodeAttentionWeights(const HeadAttention& head, int64_t position,
                            const float* q, int32_t code, float* weights,
                            float* scratch);

// out[c] = sum of weights * values for columns c in [column_begin,
// column_end): window values, the new token's `value`, the code means. A
// streaming loop over the slot's state rows (bf16 rows widened in
// registers); rows of weight 0 are skipped.
void DecodeWeightedValues(const HeadAttention& head, const float* weights,
                          const float* value, int column_begin, int column_end,
                          float* out);

// Floats of scratch BlockAttention needs for n queries (with bf16 state,
// also room for the head's window values and means widened to float32).
int64_t BlockScratchFloats(const HeadAttention& head, int n);

// Attention of n consecutive queries (positions first_position..) against
// the state and the block's own keys (codes[i * code_stride]) and values
// (values + i * value_stride). Writes out + i * out_stride (d_v floats).
// Uses BLAS: call from one thread.
void BlockAttention(const HeadAttention& head, int64_t first_position, int n,
                    const float* q, int q_stride, const int32_t* codes,
                    int code_stride, const float* values, int value_stride,
                    float* out, int out_stride, float* scratch);

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_ATTENTION_CPU_H_
