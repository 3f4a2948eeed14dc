// The device interface the model is written against: memory plus one virtual
// per model-level operation. CpuBackend and CudaBackend implement it; every
// pointer an op takes is backend memory unless the comment says "host".
//
// Weights cross the interface as TensorViews (tensor.h) carrying their dtype
// and shape; attention tables and state carry theirs in the structs of
// kernels/attention_types.h. Supports(op, dtype) says which dtypes a backend
// runs (F32 everywhere today). Every op first validates its arguments with
// op_checks.h (sizes, strides, null pointers, slot indices, dtypes) and
// returns InvalidArgument / OutOfRange / Unimplemented naming the backend
// and the op, so no backend reads an argument it has not checked.
#ifndef TVQ_SERVER_BACKEND_BACKEND_H_
#define TVQ_SERVER_BACKEND_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/attention_types.h"
#include "server/backend/tensor.h"

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
  T* as() const {
    return static_cast<T*>(pointer_);
  }
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

// The shapes of attention and state, defined once for every backend and
// both kernel folders in kernels/attention_types.h.
using AttentionShape = ::tvq::kernels::AttentionShape;
using AttentionTables = ::tvq::kernels::AttentionTables;
using SublayerState = ::tvq::kernels::SublayerState;

// Row-major GEMM: c = alpha * op(a) * op(b) + beta * c with op(a) [m, k]
// and op(b) [k, n]: a is stored [m, k] (or [k, m] with transpose_a), b [k, n]
// (or [n, k] with transpose_b), c [m, n]; each view's row_stride is the
// stored matrix's row stride. Activations (a, c) are F32; b is usually a
// weight and may be any dtype the backend Supports(Op::kGemm, ...).
struct GemmArgs {
  bool transpose_a = false;
  bool transpose_b = false;
  float alpha = 1;
  TensorView a;
  TensorView b;
  float beta = 0;
  MutableTensorView c;
  // Each row of c must be bitwise independent of the other rows (decode
  // batches: a sequence's numbers never depend on its batch peers).
  bool batch_invariant = false;

  int m() const { return static_cast<int>(c.rows()); }
  int n() const { return static_cast<int>(c.cols()); }
  int k() const { return static_cast<int>(transpose_a ? a.rows() : a.cols()); }
};

// The operations of Backend, for Supports() and error messages.
enum class Op {
  kUploadWeights,
  kGemm,
  kEmbed,
  kRmsNorm,
  kHeadRmsNorm,
  kSilu,
  kSquaredRelu,
  kMultiply,
  kVqAssign,
  kBlockAttention,
  kDecodeAttention,
  kUpdateState,
  kUpdateStateBatch,
  kLogSoftmax,
};
// "Gemm", "BlockAttention", ...: the virtual's name.
const char* OpName(Op op);

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind device() const = 0;
  // Human-readable device, e.g. "cpu (2 threads)" or "NVIDIA H100 (cuda:0)".
  virtual std::string DeviceName() const = 0;
  // The implementing class, for error messages: "CpuBackend", "CudaBackend".
  virtual const char* Name() const = 0;

  // Whether `op` runs with its weight / table / state operand of `dtype`
  // (the dtype of GemmArgs::b, of the embedding table, of norm gains and
  // biases, of AttentionTables / SublayerState). Activations are F32
  // everywhere. An op given an unsupported dtype returns Unimplemented
  // ("CpuBackend::Gemm does not support BF16 weights yet").
  virtual bool Supports(Op op, DType dtype) const = 0;

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
  // Makes a read-only host tensor (which outlives its use) readable by ops
  // and returns the view to pass them, same dtype and shape: the CPU uses
  // `host` in place, a GPU copies it (contiguous) into `storage`.
  virtual absl::StatusOr<TensorView> UploadWeights(const TensorView& host,
                                                   DeviceBuffer* storage) = 0;

  // ---- model-level operations
  virtual absl::Status Gemm(const GemmArgs& args) = 0;

  // x[i] = embeddings[tokens[i]] (+ position_scale * Sin(positions[i]) when
  // add_positions); embeddings [V, d_model], x [n, d_model] contiguous.
  // tokens, positions: host arrays of n, tokens in [0, V).
  virtual absl::Status Embed(const TensorView& embeddings,
                             const int32_t* tokens, const int64_t* positions,
                             int n, bool add_positions, float position_scale,
                             double pe_lam, float* x) = 0;

  // y = x / sqrt(1e-6 + mean(x^2)) * gain + bias over rows of `width`
  // (gain, bias [width] or empty views); x and y have row strides.
  virtual absl::Status RmsNorm(int rows, int width, const float* x,
                               int x_stride, const TensorView& gain,
                               const TensorView& bias, float* y,
                               int y_stride) = 0;

  // In place on `rows` rows: per head, q <- RMS(q) * scale (width d_k) for
  // the `heads` groups starting at q (stride q_stride).
  virtual absl::Status HeadRmsNorm(int rows, int heads, int width, float* q,
                                   int q_stride, float scale) = 0;

  // In place: x <- silu(x) for a [rows, cols] block with row stride.
  virtual absl::Status Silu(int rows, int cols, float* x, int stride) = 0;

  // In place: x <- max(x, 0)^2 for a [rows, cols] block with row stride
  // (the MLP activation of the optimized-branch family).
  virtual absl::Status SquaredRelu(int rows, int cols, float* x,
                                   int stride) = 0;

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
  virtual absl::Status BlockAttention(const AttentionShape& shape,
                                      const AttentionTables& tables,
                                      const SublayerState& state, int slot,
                                      int64_t first_position, int n,
                                      const float* q, int q_stride,
                                      const int32_t* codes, const float* values,
                                      int value_stride, float* out) = 0;

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
  virtual absl::Status UpdateStateBatch(
      const AttentionShape& shape, const SublayerState& state, const int* slots,
      const int64_t* positions, int batch, const int32_t* codes,
      const float* values, int value_stride) = 0;

  // In place on [rows, cols]: x <- log_softmax((x + bias) * scale); bias
  // [cols] or an empty view.
  virtual absl::Status LogSoftmax(int rows, int cols, const TensorView& bias,
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
