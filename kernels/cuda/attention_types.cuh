// Plain views of one attention sublayer's sizes, tables and state shared by
// the CUDA attention and state-update kernels (mirrors of the runtime's
// AttentionShape / AttentionTables / SublayerState without Abseil).
#ifndef TVQ_KERNELS_CUDA_ATTENTION_TYPES_CUH_
#define TVQ_KERNELS_CUDA_ATTENTION_TYPES_CUH_

#include <cstdint>

namespace tvq::kernels::cuda {

struct AttentionDims {
  int n_head = 0;
  int n_code = 0;   // S
  int mem_len = 0;  // M
  int d_k = 0;
  int d_v = 0;
  bool agg_cache = false;
};

// Input-independent tables (device memory).
struct AttentionTableView {
  const float* codebook = nullptr;  // [H, S, d_k]
  const float* relative = nullptr;  // [H, M + 1, d_k]
  const float* u = nullptr;         // [H, d_k]
  const float* v = nullptr;         // [H, d_k]
};

// Every slot's state for one sublayer (device memory); slot `slot`, head h
// starts at (slot * H + h) times the per-head size.
struct StateView {
  float* counts = nullptr;          // [slots, H, S]
  float* means = nullptr;           // [slots, H, S, d_v]
  int32_t* window_codes = nullptr;  // [slots, H, M], -1 = empty
  float* window_values = nullptr;   // [slots, H, M, d_v]
};

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_ATTENTION_TYPES_CUH_
