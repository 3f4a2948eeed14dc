// The sizes, tables and state of one Transformer-VQ attention sublayer, as
// every backend and both kernel folders see them: the one definition (plain
// C++17 structs, no Abseil) that kernels/cpu, kernels/cuda and
// server/backend/backend.h share. Pointers are backend memory (host memory
// for the CPU, device memory for CUDA).
//
// Element types: `dtype` names the stored type of the floating arrays. The
// pointers are typed for kF32, the only type implemented; a kernel for
// another dtype reinterprets them (e.g. as const uint16_t* for kBF16) after
// checking `dtype`. Window codes are always int32.
#ifndef TVQ_KERNELS_ATTENTION_TYPES_H_
#define TVQ_KERNELS_ATTENTION_TYPES_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace tvq::kernels {

// Sizes of one attention sublayer.
struct AttentionShape {
  int n_head = 0;   // H
  int n_code = 0;   // S
  int mem_len = 0;  // M
  int d_k = 0;
  int d_v = 0;
  bool agg_cache = false;
};

// Input-independent tensors of one attention sublayer.
struct AttentionTables {
  const float* codebook = nullptr;  // [H, S, d_k] c_sum / max(c_count, 0.01)
  const float* codebook_sq_norm = nullptr;  // [H, S] |c_s|^2
  const float* relative = nullptr;          // [H, M + 1, d_k] r_d (scaled)
  const float* u = nullptr;                 // [H, d_k] u' (scaled)
  const float* v = nullptr;                 // [H, d_k] v' (scaled)
  DType dtype = DType::kF32;                // of every array above
};

// The state of every slot for one sublayer (the state pool owns it). Slot
// `slot`, head h starts at (slot * H + h) times the per-head size.
struct SublayerState {
  float* counts = nullptr;          // [slots, H, S]
  float* means = nullptr;           // [slots, H, S, d_v]
  int32_t* window_codes = nullptr;  // [slots, H, M], -1 = empty
  float* window_values = nullptr;   // [slots, H, M, d_v]
  DType dtype = DType::kF32;        // of counts, means and window_values
  int num_slots = 0;                // slots the arrays hold
};

}  // namespace tvq::kernels

#endif  // TVQ_KERNELS_ATTENTION_TYPES_H_
