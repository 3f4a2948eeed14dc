#include "kernels/cpu/state_update_cpu.h"

#include <algorithm>

namespace tvq::kernels::cpu {

void AbsorbToken(int mem_len, int d_v, float* counts, float* means,
                 int32_t* window_codes, float* window_values,
                 int64_t position, int32_t code, const float* value) {
  const int slot = static_cast<int>(position % mem_len);
  float* slot_value = window_values + static_cast<int64_t>(slot) * d_v;
  const int32_t evicted = window_codes[slot];
  if (evicted >= 0) {
    const float count = counts[evicted] + 1.0f;
    float* mean = means + static_cast<int64_t>(evicted) * d_v;
#pragma omp simd
    for (int c = 0; c < d_v; ++c) mean[c] += (slot_value[c] - mean[c]) / count;
    counts[evicted] = count;
  }
  window_codes[slot] = code;
  std::copy(value, value + d_v, slot_value);
}

void AbsorbToken(int mem_len, int d_v, float* counts, BFloat16* means,
                 int32_t* window_codes, BFloat16* window_values,
                 int64_t position, int32_t code, const float* value) {
  const int slot = static_cast<int>(position % mem_len);
  BFloat16* slot_value = window_values + static_cast<int64_t>(slot) * d_v;
  const int32_t evicted = window_codes[slot];
  if (evicted >= 0) {
    const float count = counts[evicted] + 1.0f;
    BFloat16* mean = means + static_cast<int64_t>(evicted) * d_v;
    for (int c = 0; c < d_v; ++c) {
      const float old = BF16ToF32(mean[c]);
      mean[c] = F32ToBF16(old + (BF16ToF32(slot_value[c]) - old) / count);
    }
    counts[evicted] = count;
  }
  window_codes[slot] = code;
  F32ToBF16Array(d_v, value, slot_value);
}

}  // namespace tvq::kernels::cpu
