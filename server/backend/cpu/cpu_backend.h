// The CPU backend: OpenBLAS GEMMs and the loops of kernels/cpu, threaded
// with a persistent pool.
#ifndef TVQ_SERVER_BACKEND_CPU_CPU_BACKEND_H_
#define TVQ_SERVER_BACKEND_CPU_CPU_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/parallel_for.h"
#include "server/backend/backend.h"

namespace tvq::runtime {

class CpuBackend final : public Backend {
 public:
  // num_threads 0 = every core.
  explicit CpuBackend(int num_threads);

  DeviceKind device() const override { return DeviceKind::kCpu; }
  const char* Name() const override { return "CpuBackend"; }
  // F32 everywhere; BF16 also for GEMM weights, embeddings and the state of
  // the attention and state-update ops (norm gains, biases and attention
  // tables stay F32).
  bool Supports(Op op, DType dtype) const override;
  std::string DeviceName() const override;
  int num_threads() const { return pool_.num_threads(); }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  absl::Status CopyToDevice(void* device_destination, const void* host_source,
                            size_t bytes) override;
  absl::Status CopyToHost(void* host_destination, const void* device_source,
                          size_t bytes) override;
  absl::Status CopyOnDevice(void* destination, const void* source,
                            size_t bytes) override;
  absl::Status Fill(float* data, size_t count, float value) override;
  absl::Status FillInt(int32_t* data, size_t count, int32_t value) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
  absl::StatusOr<TensorView> UploadWeights(const TensorView& host,
                                           DeviceBuffer* storage) override;

  absl::Status Gemm(const GemmArgs& args) override;
  absl::Status Embed(const TensorView& embeddings, const int32_t* tokens,
                     const int64_t* positions, int n, bool add_positions,
                     float position_scale, double pe_lam, float* x) override;
  absl::Status RmsNorm(int rows, int width, const float* x, int x_stride,
                       const TensorView& gain, const TensorView& bias, float* y,
                       int y_stride) override;
  absl::Status HeadRmsNorm(int rows, int heads, int width, float* q,
                           int q_stride, float scale) override;
  absl::Status Silu(int rows, int cols, float* x, int stride) override;
  absl::Status SquaredRelu(int rows, int cols, float* x, int stride) override;
  absl::Status Multiply(int rows, int cols, float* x, int x_stride,
                        const float* gate, int gate_stride) override;
  absl::Status VqAssign(int rows, const AttentionShape& shape,
                        const AttentionTables& tables, const float* keys,
                        int key_stride, int32_t* codes) override;
  absl::Status BlockAttention(const AttentionShape& shape,
                              const AttentionTables& tables,
                              const SublayerState& state, int slot,
                              int64_t first_position, int n, const float* q,
                              int q_stride, const int32_t* codes,
                              const float* values, int value_stride,
                              float* out) override;
  absl::Status DecodeAttention(const AttentionShape& shape,
                               const AttentionTables& tables,
                               const SublayerState& state, const int* slots,
                               const int64_t* positions, int batch,
                               const float* q, int q_stride,
                               const int32_t* codes, const float* values,
                               int value_stride, float* out) override;
  absl::Status UpdateState(const AttentionShape& shape,
                           const SublayerState& state, int slot,
                           int64_t first_position, int n, const int32_t* codes,
                           const float* values, int value_stride) override;
  absl::Status UpdateStateBatch(const AttentionShape& shape,
                                const SublayerState& state, const int* slots,
                                const int64_t* positions, int batch,
                                const int32_t* codes, const float* values,
                                int value_stride) override;
  absl::Status LogSoftmax(int rows, int cols, const TensorView& bias,
                          float scale, float* x) override;

 private:
  float* Scratch(size_t floats);

  kernels::cpu::ThreadPool pool_;
  std::vector<float> scratch_;
  // BF16 GEMM weights widened for OpenBLAS (non-invariant GEMMs).
  std::vector<float> gemm_weights_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BACKEND_CPU_CPU_BACKEND_H_
