// Argument checks of every Backend op, written once and called first by
// each backend (CpuBackend, CudaBackend, any later one): sizes >= 0, row
// strides >= row widths, non-null pointers where there is data, attention
// shapes with every size >= 1, slot indices in [0, state.num_slots) and
// distinct within a batch, and the dtype of weights / tables / state
// against Backend::Supports. Each returns OK or an error that names the
// backend, the op and the problem, e.g.
//   InvalidArgument  "CpuBackend::DecodeAttention: slot 3 appears twice in the
//   batch" OutOfRange       "CudaBackend::UpdateState: slot 9 is outside [0,
//   4)" Unimplemented    "CpuBackend::Gemm does not support BF16 weights yet"
// The checks read only sizes, pointers and host index arrays, never
// backend memory, so they are cheap on the decode path.
#ifndef TVQ_SERVER_BACKEND_OP_CHECKS_H_
#define TVQ_SERVER_BACKEND_OP_CHECKS_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "server/backend/backend.h"
#include "server/backend/tensor.h"

namespace tvq::runtime::op_checks {

// Unimplemented "<Backend>::<Op> does not support <DTYPE> <operand> yet"
// unless backend.Supports(op, dtype).
[[nodiscard]] absl::Status DTypeSupported(const Backend& backend, Op op,
                                          DType dtype,
                                          std::string_view operand);

[[nodiscard]] absl::Status UploadWeights(const Backend& backend,
                                         const TensorView& host,
                                         const DeviceBuffer* storage);
[[nodiscard]] absl::Status Gemm(const Backend& backend, const GemmArgs& args);
[[nodiscard]] absl::Status Embed(const Backend& backend,
                                 const TensorView& embeddings,
                                 const int32_t* tokens,
                                 const int64_t* positions, int n,
                                 const float* x);
[[nodiscard]] absl::Status RmsNorm(const Backend& backend, int rows, int width,
                                   const float* x, int x_stride,
                                   const TensorView& gain,
                                   const TensorView& bias, const float* y,
                                   int y_stride);
[[nodiscard]] absl::Status HeadRmsNorm(const Backend& backend, int rows,
                                       int heads, int width, const float* q,
                                       int q_stride);
[[nodiscard]] absl::Status Silu(const Backend& backend, int rows, int cols,
                                const float* x, int stride);
[[nodiscard]] absl::Status SquaredRelu(const Backend& backend, int rows,
                                       int cols, const float* x, int stride);
[[nodiscard]] absl::Status Multiply(const Backend& backend, int rows, int cols,
                                    const float* x, int x_stride,
                                    const float* gate, int gate_stride);
[[nodiscard]] absl::Status VqAssign(const Backend& backend, int rows,
                                    const AttentionShape& shape,
                                    const AttentionTables& tables,
                                    const float* keys, int key_stride,
                                    const int32_t* codes);
[[nodiscard]] absl::Status BlockAttention(
    const Backend& backend, const AttentionShape& shape,
    const AttentionTables& tables, const SublayerState& state, int slot,
    int64_t first_position, int n, const float* q, int q_stride,
    const int32_t* codes, const float* values, int value_stride,
    const float* out);
[[nodiscard]] absl::Status DecodeAttention(
    const Backend& backend, const AttentionShape& shape,
    const AttentionTables& tables, const SublayerState& state, const int* slots,
    const int64_t* positions, int batch, const float* q, int q_stride,
    const int32_t* codes, const float* values, int value_stride,
    const float* out);
[[nodiscard]] absl::Status UpdateState(const Backend& backend,
                                       const AttentionShape& shape,
                                       const SublayerState& state, int slot,
                                       int64_t first_position, int n,
                                       const int32_t* codes,
                                       const float* values, int value_stride);
[[nodiscard]] absl::Status UpdateStateBatch(
    const Backend& backend, const AttentionShape& shape,
    const SublayerState& state, const int* slots, const int64_t* positions,
    int batch, const int32_t* codes, const float* values, int value_stride);
[[nodiscard]] absl::Status LogSoftmax(const Backend& backend, int rows,
                                      int cols, const TensorView& bias,
                                      const float* x);

}  // namespace tvq::runtime::op_checks

#endif  // TVQ_SERVER_BACKEND_OP_CHECKS_H_
