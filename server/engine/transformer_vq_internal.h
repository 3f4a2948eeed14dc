// The engine's private types shared by the format_version 1 forward pass
// (transformer_vq.cc) and the optimized family's (stacked_family.cc): the
// activation workspace, the format_version 2 sublayer weights, and the
// tables both derive at load.
// Private to server/engine.
#ifndef TVQ_SERVER_ENGINE_TRANSFORMER_VQ_INTERNAL_H_
#define TVQ_SERVER_ENGINE_TRANSFORMER_VQ_INTERNAL_H_

#include <cstdint>
#include <span>
#include <vector>

#include "server/backend/backend.h"

#include "server/engine/transformer_vq.h"

namespace tvq::runtime {

// format_version 2: one attention sublayer of one layer (slices of the
// stacked tensors) and its derived tables.
struct TransformerVq::StackedAttention {
  TensorView q_kernel;    // [D, n_q*dk]
  TensorView k_kernel;    // [D, n_kv*dk]
  TensorView v_kernel;    // [D, n_kv*dv]
  TensorView g_kernel;    // [D, dv] (shga; empty otherwise)
  TensorView res_kernel;  // [n_q*dv, D]
  std::vector<float> codebook, codebook_sq_norm, relative;
  // u', v' of each query group, [n_kv, dk] (see QueryGroups).
  std::vector<std::vector<float>> u, v;
  std::vector<AttentionTables> group_tables;
};

struct TransformerVq::StackedMlp {
  TensorView up_kernel;    // Dense_0 [D, d_ff]
  TensorView down_kernel;  // Dense_1 [d_ff, D]
};

// Activations for up to `capacity` rows, in backend memory.
struct TransformerVq::Workspace {
  int capacity = 0;
  DeviceBuffer x, normed, q, kvg, attention, logits, codes;
  DeviceBuffer hidden;  // MLP activations (format_version 2, d_ff > 0)
  std::vector<int32_t> host_codes;
};

// Tables both families derive at load (transformer_vq.cc).
// Sin(p) of spec §2 in double precision: row[i] = sin, row[width/2 + i] =
// cos of p / pe_lam^(2i / width).
void SinusoidDouble(int64_t position, int width, double pe_lam, double* row);
// Codebook c = c_sum / max(c_count, 0.01) and |c|^2, for `heads` heads of
// `codes` codewords of `dk` values ([heads, codes, dk] and [heads, codes]).
void DeriveCodebook(std::span<const float> c_sum, std::span<const float> c_count,
                    int heads, int codes, int dk, std::vector<float>* codebook,
                    std::vector<float>* sq_norm);
// r_d = (Sin(d) Wr) key_scale for d = 0..mem_len, laid out
// [heads, mem_len + 1, dk]; accumulated in double, rounded once. `r_kernel`
// is [d_model, heads * dk].
void DeriveRelativeTable(std::span<const float> r_kernel, int heads,
                         int mem_len, int d_model, int dk, double pe_lam,
                         double key_scale, std::vector<float>* relative);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_ENGINE_TRANSFORMER_VQ_INTERNAL_H_
