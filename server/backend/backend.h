// The device interface the model is written against: memory plus one virtual
// per model-level operation. CpuBackend and CudaBackend implement it; every
// pointer an op takes is backend memory unless the comment says "host".
#ifndef TVQ_SERVER_BACKEND_BACKEND_H_
#define TVQ_SERVER_BACKEND_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tvq::runtime {

enum class DeviceKind { kCpu, kCuda };

// Owns one allocation in backend memory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(void* pointer, size_t bytes, std::function<void(void*)> free)
      : pointer_(pointer), bytes_(bytes), free_(std::move(free)) {}
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      pointer_ = other.pointer_;
      bytes_ = other.bytes_;
      free_ = std::move(other.free_);
      other.pointer_ = nullptr;
      other.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Release(); }

  template <typename T>
  T* as() const { return static_cast<T*>(pointer_); }
  void* get() const { return pointer_; }
  size_t bytes() const { return bytes_; }

 private:
  void Release() {
    if (pointer_ != nullptr && free_) free_(pointer_);
    pointer_ = nullptr;
  }
  void* pointer_ = nullptr;
  size_t bytes_ = 0;
  std::function<void(void*)> free_;
};

// Sizes of one attention sublayer.
struct AttentionShape {
  int n_head = 0;
  int n_code = 0;   // S
  int mem_len = 0;  // M
  int d_k = 0;
  int d_v = 0;
  bool agg_cache = false;
};

// Input-independent tensors of one attention sublayer (backend memory).
struct AttentionTables {
  const float* codebook = nullptr;        // [H, S, d_k] = c_sum / max(c_count, 0.01)
  const float* codebook_sq_norm = nullptr;  // [H, S] |c_s|^2
  const float* relative = nullptr;        // [H, M + 1, d_k]  r_d (scaled)
  const float* u = nullptr;               // [H, d_k] u' (scaled)
  const float* v = nullptr;               // [H, d_k] v' (scaled)
};

// The state of every slot for one sublayer (StatePool owns it). A slot's
// arrays start at slot * (per-slot size).
struct SublayerState {
  float* counts = nullptr;          // [slots, H, S]
  float* means = nullptr;           // [slots, H, S, d_v]
  int32_t* window_codes = nullptr;  // [slots, H, M], -1 = empty
  float* window_values = nullptr;   // [slots, H, M, d_v]
};

// Row-major GEMM: c = alpha * op(a) * op(b) + beta * c, op(a) [m, k],
// op(b) [k, n]; lda/ldb/ldc are row strides of the stored matrices.
struct GemmArgs {
  bool transpose_a = false;
  bool transpose_b = false;
  int m = 0, n = 0, k = 0;
  float alpha = 1;
  const float* a = nullptr;
  int lda = 0;
  const float* b = nullptr;
  int ldb = 0;
  float beta = 0;
  float* c = nullptr;
  int ldc = 0;
  // Each row of c must be bitwise independent of the other rows (decode
  // batches: a sequence's numbers never depend on its batch peers).
  bool batch_invariant = false;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind device() const = 0;
  // Human-readable device, e.g. "cpu (2 threads)" or "NVIDIA H100 (cuda:0)".
  virtual std::string DeviceName() const = 0;

  // ---- memory
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  virtual absl::Status CopyToDevice(void* device_destination,
                                    const void* host_source, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_destination,
                                  const void* device_source, size_t bytes) = 0;
  virtual absl::Status CopyOnDevice(void* destination, const void* source,
                                    size_t bytes) = 0;
  virtual absl::Status Fill(float* data, size_t count, float value) = 0;
  virtual absl::Status FillInt(int32_t* data, size_t count, int32_t value) = 0;
  virtual absl::Status Synchronize() = 0;
  // Makes read-only host data (which outlives its use) readable by ops and
  // returns the pointer to pass them: the CPU uses `host` in place, a GPU
  // copies it into `storage`.
  virtual absl::StatusOr<const float*> UploadWeights(const float* host,
                                                     size_t count,
                                                     DeviceBuffer* storage) = 0;

  // ---- model-level operations
  virtual absl::Status Gemm(const GemmArgs& args) = 0;

  // x[i] = embeddings[tokens[i]] (+ position_scale * Sin(positions[i]) when
  // add_positions). tokens, positions: host arrays of n.
  virtual absl::Status Embed(const float* embeddings, int d_model,
                             const int32_t* tokens, const int64_t* positions,
                             int n, bool add_positions, float position_scale,
                             double pe_lam, float* x) = 0;

  // y = x / sqrt(1e-6 + mean(x^2)) * gain + bias over rows of `width`
  // (gain/bias may be null); x and y have row strides.
  virtual absl::Status RmsNorm(int rows, int width, const float* x,
                               int x_stride, const float* gain,
                               const float* bias, float* y, int y_stride) = 0;

  // In place on `rows` rows: per head, q <- RMS(q) * scale (width d_k) for
  // the `heads` groups starting at q (stride q_stride).
  virtual absl::Status HeadRmsNorm(int rows, int heads, int width, float* q,
                                   int q_stride, float scale) = 0;

  // In place: x <- silu(x) for a [rows, cols] block with row stride.
  virtual absl::Status Silu(int rows, int cols, float* x, int stride) = 0;

  // In place: x <- x * gate, [rows, cols] with row strides.
  virtual absl::Status Multiply(int rows, int cols, float* x, int x_stride,
                                const float* gate, int gate_stride) = 0;

  // codes[i, h] = argmin_s |keys[i, h] - codebook[h, s]|^2 (float32
  // distances, lowest index on ties). keys row stride key_stride.
  virtual absl::Status VqAssign(int rows, const AttentionShape& shape,
                                const AttentionTables& tables,
                                const float* keys, int key_stride,
                                int32_t* codes) = 0;

  // Attention of a block of n consecutive queries of one slot, positions
  // first_position .. first_position + n - 1, against the slot's state (not
  // modified) and the block's own keys (codes) and values. q row stride
  // q_stride ([H, d_k] per row), values stride value_stride ([H, d_v] per
  // row); out [n, H * d_v] contiguous.
  virtual absl::Status BlockAttention(
      const AttentionShape& shape, const AttentionTables& tables,
      const SublayerState& state, int slot, int64_t first_position, int n,
      const float* q, int q_stride, const int32_t* codes,
      const float* values, int value_stride, float* out) = 0;

  // One query per slot (slots: host array of batch distinct slot indices,
  // positions: host array of their positions). Same conventions as
  // BlockAttention with n = 1 per slot; out [batch, H * d_v].
  virtual absl::Status DecodeAttention(
      const AttentionShape& shape, const AttentionTables& tables,
      const SublayerState& state, const int* slots, const int64_t* positions,
      int batch, const float* q, int q_stride, const int32_t* codes,
      const float* values, int value_stride, float* out) = 0;

  // Feeds n consecutive tokens (codes [n, H], values with value_stride) into
  // the window of `slot` starting at first_position: for each token, the
  // one in ring slot p mod M (if any) is evicted into count/mean, then the
  // token is written there.
  virtual absl::Status UpdateState(const AttentionShape& shape,
                                   const SublayerState& state, int slot,
                                   int64_t first_position, int n,
                                   const int32_t* codes, const float* values,
                                   int value_stride) = 0;
  // Same for one token per slot of a decode batch.
  virtual absl::Status UpdateStateBatch(const AttentionShape& shape,
                                        const SublayerState& state,
                                        const int* slots,
                                        const int64_t* positions, int batch,
                                        const int32_t* codes,
                                        const float* values,
                                        int value_stride) = 0;

  // In place on [rows, cols]: x <- log_softmax((x + bias) * scale); bias
  // [cols] may be null.
  virtual absl::Status LogSoftmax(int rows, int cols, const float* bias,
                                  float scale, float* x) = 0;
};

struct BackendOptions {
  // "auto", "cpu", "cuda" or "cuda:N".
  std::string device = "auto";
  // CPU threads (0 = all cores).
  int num_threads = 0;
};

// Creates the backend `options.device` names. "auto" picks CUDA when the
// build has it and a GPU is present, else the CPU. Errors: Unimplemented
// when CUDA is asked for in a build without it, FailedPrecondition when no
// GPU is usable, InvalidArgument for an unknown device string.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    const BackendOptions& options);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BACKEND_BACKEND_H_
