// The decode-state update of one head (spec §3): evict into count/mean,
// write the window ring.
#ifndef TVQ_KERNELS_CPU_STATE_UPDATE_CPU_H_
#define TVQ_KERNELS_CPU_STATE_UPDATE_CPU_H_

#include <cstdint>

#include "kernels/bf16.h"

namespace tvq::kernels::cpu {

// Absorbs the token at `position` (code, value [d_v]): the token in ring
// slot position mod M, if any, joins count/mean of its code
// (n' = n + 1, m' = m + (v - m) / n'); then the new token takes the slot.
void AbsorbToken(int mem_len, int d_v, float* counts, float* means,
                 int32_t* window_codes, float* window_values,
                 int64_t position, int32_t code, const float* value);
// The same with bfloat16 means and window values (counts stay float32): the
// mean update is computed in float32 and rounded to bf16 (nearest even) once
// per element, the new value is rounded once when it enters the window.
void AbsorbToken(int mem_len, int d_v, float* counts, BFloat16* means,
                 int32_t* window_codes, BFloat16* window_values,
                 int64_t position, int32_t code, const float* value);

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_STATE_UPDATE_CPU_H_
