// The CUDA backend: device memory, one stream, fp32 GEMMs through cuBLAS in
// pedantic fp32 (never TF32, so VQ codes match the CPU) and the kernels of
// kernels/cuda. Host index arrays (tokens, positions, slots) reach the
// device through a ring of pinned staging buffers.
#ifndef TVQ_SERVER_BACKEND_CUDA_CUDA_BACKEND_H_
#define TVQ_SERVER_BACKEND_CUDA_CUDA_BACKEND_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/backend/backend.h"

// CUDA handle types, declared here so that this header needs no CUDA
// include path (cudaStream_t = CUstream_st*, cublasHandle_t =
// cublasContext*, cudaEvent_t = CUevent_st*).
struct CUstream_st;
struct CUevent_st;
struct cublasContext;

namespace tvq::runtime {

// Creates the CUDA backend on device `ordinal` (BackendOptions::num_threads
// does not apply). FailedPrecondition, with the CUDA error text, when no
// usable GPU is there (no driver, no device, ordinal out of range, or the
// build's kernels cannot run on it).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const BackendOptions& options, int ordinal);

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int ordinal);
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;
  ~CudaBackend() override;

  DeviceKind device() const override { return DeviceKind::kCuda; }
  const char* Name() const override { return "CudaBackend"; }
  // F32 weights, tables and state only (bf16 kernels are a later step).
  bool Supports(Op op, DType dtype) const override;
  std::string DeviceName() const override { return name_; }
  int ordinal() const { return ordinal_; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  absl::Status CopyToDevice(void* device_destination, const void* host_source,
                            size_t bytes) override;
  absl::Status CopyToHost(void* host_destination, const void* device_source,
                          size_t bytes) override;
  // The ranges must not overlap (InvalidArgument otherwise).
  absl::Status CopyOnDevice(void* destination, const void* source,
                            size_t bytes) override;
  absl::Status Fill(float* data, size_t count, float value) override;
  absl::Status FillInt(int32_t* data, size_t count, int32_t value) override;
  absl::Status Synchronize() override;
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
  // The host index arrays ops receive, each with its own device copy.
  enum IndexArray { kTokens = 0, kPositions = 1, kSlots = 2, kIndexArrays = 3 };
  struct IndexCopy {
    void* device = nullptr;
    size_t capacity = 0;
    bool valid = false;
    std::vector<unsigned char> last;  // what the device copy holds
  };
  struct StagingBuffer {
    void* pinned = nullptr;
    size_t capacity = 0;
    CUevent_st* copied = nullptr;  // recorded after the copy out of it
    bool pending = false;
  };

  explicit CudaBackend(int ordinal);
  // Makes this backend's device current for the calling thread.
  absl::Status Activate();
  // Device scratch of at least `bytes`, valid until the next call.
  absl::StatusOr<void*> Scratch(size_t bytes);
  // A device copy of `bytes` of host index data; reuses the previous copy
  // of the same array when its contents are unchanged.
  absl::StatusOr<const void*> UploadIndices(IndexArray array, const void* host,
                                            size_t bytes);
  int ordinal_;
  std::string name_;
  int target_blocks_ = 264;  // twice the SM count
  CUstream_st* stream_ = nullptr;
  cublasContext* cublas_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  std::array<IndexCopy, kIndexArrays> index_copies_;
  std::vector<StagingBuffer> staging_;
  size_t next_staging_ = 0;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BACKEND_CUDA_CUDA_BACKEND_H_
