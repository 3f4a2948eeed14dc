#include "server/backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "absl/strings/str_format.h"
#include "kernels/cuda/attention_cuda.cuh"
#include "kernels/cuda/elementwise_cuda.cuh"
#include "kernels/cuda/gemm_cuda.cuh"
#include "kernels/cuda/state_update_cuda.cuh"
#include "kernels/cuda/vq_cuda.cuh"
#include "server/base/status_macros.h"

namespace tvq::runtime {
namespace {

namespace cuda = ::tvq::kernels::cuda;

static_assert(sizeof(int) == sizeof(int32_t), "slots are passed as int32");

constexpr size_t kStagingBuffers = 8;
constexpr size_t kMinStagingBytes = 64 * 1024;

// "cudaMemcpyAsync" out of "cudaMemcpyAsync(a, b, ...)".
std::string_view CallName(std::string_view expression) {
  return expression.substr(0, expression.find('('));
}

std::string_view BaseName(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

absl::Status CudaError(cudaError_t error, std::string_view expression,
                       std::string_view file, int line) {
  return absl::InternalError(absl::StrFormat(
      "%s: %s (%s) at %s:%d", CallName(expression), cudaGetErrorName(error),
      cudaGetErrorString(error), BaseName(file), line));
}

absl::Status CublasError(cublasStatus_t status, std::string_view expression,
                         std::string_view file, int line) {
  return absl::InternalError(absl::StrFormat(
      "%s: %s (%s) at %s:%d", CallName(expression), cublasGetStatusName(status),
      cublasGetStatusString(status), BaseName(file), line));
}

}  // namespace

// Returns InternalError("call: cudaErrorX (text) at file:line") when a CUDA
// runtime call or kernel launcher fails.
#define TVQ_CUDA_RETURN_IF_ERROR(expression)                              \
  do {                                                                    \
    const cudaError_t tvq_cuda_error_ = (expression);                     \
    if (tvq_cuda_error_ != cudaSuccess) {                                 \
      return CudaError(tvq_cuda_error_, #expression, __FILE__, __LINE__); \
    }                                                                     \
  } while (false)

#define TVQ_CUBLAS_RETURN_IF_ERROR(expression)                                 \
  do {                                                                         \
    const cublasStatus_t tvq_cublas_status_ = (expression);                    \
    if (tvq_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                         \
      return CublasError(tvq_cublas_status_, #expression, __FILE__, __LINE__); \
    }                                                                          \
  } while (false)

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    const BackendOptions& options, int ordinal) {
  (void)options;  // num_threads is a CPU setting
  TVQ_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend,
                       CudaBackend::Create(ordinal));
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int ordinal) {
  auto unusable = [ordinal](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "--device=cuda:%d: no usable CUDA device: %s", ordinal, why));
  };
  auto describe = [](const char* call, cudaError_t error) {
    return absl::StrFormat("%s: %s (%s)", call, cudaGetErrorName(error),
                           cudaGetErrorString(error));
  };
  int count = 0;
  if (const cudaError_t error = cudaGetDeviceCount(&count);
      error != cudaSuccess) {
    return unusable(describe("cudaGetDeviceCount", error));
  }
  if (count == 0) return unusable("cudaGetDeviceCount found no device");
  if (ordinal < 0 || ordinal >= count) {
    return unusable(
        absl::StrFormat("the machine has %d CUDA device(s)", count));
  }
  if (const cudaError_t error = cudaSetDevice(ordinal); error != cudaSuccess) {
    return unusable(describe("cudaSetDevice", error));
  }
  cudaDeviceProp properties;
  if (const cudaError_t error = cudaGetDeviceProperties(&properties, ordinal);
      error != cudaSuccess) {
    return unusable(describe("cudaGetDeviceProperties", error));
  }

  std::unique_ptr<CudaBackend> backend(new CudaBackend(ordinal));
  backend->name_ = absl::StrFormat(
      "%s (cuda:%d, sm_%d%d, %d SMs)", properties.name, ordinal,
      properties.major, properties.minor, properties.multiProcessorCount);
  backend->target_blocks_ = std::max(2 * properties.multiProcessorCount, 2);
  cudaStream_t stream = nullptr;
  if (const cudaError_t error =
          cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      error != cudaSuccess) {
    return unusable(describe("cudaStreamCreateWithFlags", error));
  }
  backend->stream_ = stream;
  cublasHandle_t cublas = nullptr;
  if (const cublasStatus_t status = cublasCreate(&cublas);
      status != CUBLAS_STATUS_SUCCESS) {
    return unusable(absl::StrFormat("cublasCreate: %s (%s)",
                                    cublasGetStatusName(status),
                                    cublasGetStatusString(status)));
  }
  backend->cublas_ = cublas;
  // Default math never uses TF32 for fp32 GEMMs; every GEMM also asks for
  // CUBLAS_COMPUTE_32F_PEDANTIC.
  if (cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
    return unusable("cublasSetStream / cublasSetMathMode failed");
  }
  backend->staging_.resize(kStagingBuffers);
  for (StagingBuffer& staging : backend->staging_) {
    cudaEvent_t event = nullptr;
    if (const cudaError_t error =
            cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
        error != cudaSuccess) {
      return unusable(describe("cudaEventCreateWithFlags", error));
    }
    staging.copied = event;
  }
  // Run one kernel, so that a device this build has no code for (kernels are
  // built for CMAKE_CUDA_ARCHITECTURES) is refused here, not mid-request.
  absl::StatusOr<DeviceBuffer> probe = backend->Allocate(sizeof(float));
  if (!probe.ok()) return unusable(std::string(probe.status().message()));
  if (const cudaError_t error = cuda::Fill(probe->as<float>(), 1, 1.0f, stream);
      error != cudaSuccess) {
    return unusable(describe("a test kernel launch", error));
  }
  if (const cudaError_t error = cudaStreamSynchronize(stream);
      error != cudaSuccess) {
    return unusable(describe("a test kernel", error));
  }
  return backend;
}

CudaBackend::CudaBackend(int ordinal) : ordinal_(ordinal) {}

CudaBackend::~CudaBackend() {
  if (cudaSetDevice(ordinal_) != cudaSuccess) return;
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (StagingBuffer& staging : staging_) {
    if (staging.pinned != nullptr) cudaFreeHost(staging.pinned);
    if (staging.copied != nullptr) cudaEventDestroy(staging.copied);
  }
  for (IndexCopy& copy : index_copies_) {
    if (copy.device != nullptr) cudaFree(copy.device);
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaBackend::Activate() {
  TVQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal_));
  return absl::OkStatus();
}

// ------------------------------------------------------------ memory

absl::StatusOr<DeviceBuffer> CudaBackend::Allocate(size_t bytes) {
  TVQ_RETURN_IF_ERROR(Activate());
  void* pointer = nullptr;
  if (bytes > 0) {
    const cudaError_t error = cudaMalloc(&pointer, bytes);
    if (error == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // not sticky; clear it
      return absl::ResourceExhaustedError(
          absl::StrFormat("cuda:%d: cannot allocate %d bytes of device memory",
                          ordinal_, bytes));
    }
    TVQ_CUDA_RETURN_IF_ERROR(error);
    // Zeroed, like the CPU backend's memory.
    const cudaError_t zero = cudaMemsetAsync(pointer, 0, bytes, stream_);
    if (zero != cudaSuccess) {
      cudaFree(pointer);
      TVQ_CUDA_RETURN_IF_ERROR(zero);
    }
  }
  const int ordinal = ordinal_;
  return DeviceBuffer(pointer, bytes, [ordinal](void* p) {
    // Work still queued may use the buffer: let the device finish first.
    if (cudaSetDevice(ordinal) == cudaSuccess) {
      cudaDeviceSynchronize();
      cudaFree(p);
    }
  });
}

absl::Status CudaBackend::CopyToDevice(void* device_destination,
                                       const void* host_source, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      device_destination, host_source, bytes, cudaMemcpyHostToDevice, stream_));
  // The caller may free or reuse host_source as soon as this returns.
  TVQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* host_destination,
                                     const void* device_source, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      host_destination, device_source, bytes, cudaMemcpyDeviceToHost, stream_));
  TVQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyOnDevice(void* destination, const void* source,
                                       size_t bytes) {
  if (bytes == 0 || destination == source) return absl::OkStatus();
  const auto* to = static_cast<const unsigned char*>(destination);
  const auto* from = static_cast<const unsigned char*>(source);
  if (to < from + bytes && from < to + bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cuda: CopyOnDevice of %d bytes between overlapping ranges", bytes));
  }
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(destination, source, bytes,
                                           cudaMemcpyDeviceToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Fill(float* data, size_t count, float value) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cuda::Fill(data, count, value, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::FillInt(int32_t* data, size_t count, int32_t value) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cuda::FillInt(data, count, value, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Synchronize() {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<const float*> CudaBackend::UploadWeights(const float* host,
                                                        size_t count,
                                                        DeviceBuffer* storage) {
  if (storage == nullptr) {
    return absl::InvalidArgumentError("cuda: UploadWeights needs storage");
  }
  TVQ_ASSIGN_OR_RETURN(*storage, Allocate(count * sizeof(float)));
  TVQ_RETURN_IF_ERROR(
      CopyToDevice(storage->get(), host, count * sizeof(float)));
  return storage->as<const float>();
}

absl::StatusOr<void*> CudaBackend::Scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  // Work queued earlier may still use the old scratch.
  TVQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (scratch_ != nullptr) {
    TVQ_CUDA_RETURN_IF_ERROR(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
  }
  const size_t capacity = std::max(bytes, scratch_bytes_ + scratch_bytes_ / 2);
  const cudaError_t error = cudaMalloc(&scratch_, capacity);
  if (error == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    scratch_ = nullptr;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cuda:%d: cannot allocate %d bytes of scratch", ordinal_, capacity));
  }
  TVQ_CUDA_RETURN_IF_ERROR(error);
  scratch_bytes_ = capacity;
  return scratch_;
}

absl::StatusOr<const void*> CudaBackend::UploadIndices(IndexArray array,
                                                       const void* host,
                                                       size_t bytes) {
  IndexCopy& copy = index_copies_[array];
  if (copy.valid && copy.last.size() == bytes &&
      std::memcmp(copy.last.data(), host, bytes) == 0) {
    return static_cast<const void*>(copy.device);
  }
  copy.valid = false;
  if (copy.capacity < bytes) {
    TVQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    const size_t capacity = std::max<size_t>({bytes, 2 * copy.capacity, 4096});
    if (copy.device != nullptr) TVQ_CUDA_RETURN_IF_ERROR(cudaFree(copy.device));
    copy.device = nullptr;
    copy.capacity = 0;
    TVQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&copy.device, capacity));
    copy.capacity = capacity;
  }
  // The host writes into a staging buffer only after the copy that last
  // read it has run.
  StagingBuffer& staging = staging_[next_staging_];
  next_staging_ = (next_staging_ + 1) % staging_.size();
  if (staging.pending) {
    TVQ_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging.copied));
    staging.pending = false;
  }
  if (staging.capacity < bytes) {
    if (staging.pinned != nullptr)
      TVQ_CUDA_RETURN_IF_ERROR(cudaFreeHost(staging.pinned));
    staging.pinned = nullptr;
    staging.capacity = 0;
    const size_t capacity = std::max(bytes, kMinStagingBytes);
    TVQ_CUDA_RETURN_IF_ERROR(cudaMallocHost(&staging.pinned, capacity));
    staging.capacity = capacity;
  }
  std::memcpy(staging.pinned, host, bytes);
  TVQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(copy.device, staging.pinned, bytes,
                                           cudaMemcpyHostToDevice, stream_));
  TVQ_CUDA_RETURN_IF_ERROR(cudaEventRecord(staging.copied, stream_));
  staging.pending = true;
  const auto* begin = static_cast<const unsigned char*>(host);
  copy.last.assign(begin, begin + bytes);
  copy.valid = true;
  return static_cast<const void*>(copy.device);
}

// ------------------------------------------------------------ GEMM

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
// operands and the sizes m, n; the row strides are the leading dimensions.
absl::Status CudaBackend::GemmBatched(const GemmArgs& args, int64_t stride_a,
                                      int64_t stride_b, int64_t stride_c,
                                      int batch) {
  if (args.m < 0 || args.n < 0 || args.k < 0 || batch < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cuda: GEMM with negative size m=%d n=%d k=%d batch=%d",
                        args.m, args.n, args.k, batch));
  }
  if (args.m == 0 || args.n == 0 || batch == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  const cublasOperation_t op_b = args.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = args.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1) {
    TVQ_CUBLAS_RETURN_IF_ERROR(
        cublasGemmEx(cublas_, op_b, op_a, args.n, args.m, args.k, &args.alpha,
                     args.b, CUDA_R_32F, args.ldb, args.a, CUDA_R_32F, args.lda,
                     &args.beta, args.c, CUDA_R_32F, args.ldc,
                     CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
  } else {
    TVQ_CUBLAS_RETURN_IF_ERROR(cublasGemmStridedBatchedEx(
        cublas_, op_b, op_a, args.n, args.m, args.k, &args.alpha, args.b,
        CUDA_R_32F, args.ldb, stride_b, args.a, CUDA_R_32F, args.lda, stride_a,
        &args.beta, args.c, CUDA_R_32F, args.ldc, stride_c, batch,
        CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Gemm(const GemmArgs& args) {
  if (!args.batch_invariant || args.transpose_a) {
    return GemmBatched(args, 0, 0, 0, 1);
  }
  // Decode: cuBLAS chooses algorithms by shape, so a row's bits could
  // depend on the batch size; this kernel sums each element in a fixed order.
  if (args.m <= 0 || args.n <= 0) return absl::OkStatus();
  if (args.k < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cuda: GEMM with negative k=%d", args.k));
  }
  TVQ_RETURN_IF_ERROR(Activate());
  const size_t scratch_floats = cuda::InvariantGemmScratchFloats(
      args.transpose_b, args.m, args.n, args.k, target_blocks_);
  TVQ_ASSIGN_OR_RETURN(
      void* scratch,
      Scratch(sizeof(float) * std::max<size_t>(scratch_floats, 1)));
  TVQ_CUDA_RETURN_IF_ERROR(cuda::InvariantGemm(
      args.transpose_b, args.m, args.n, args.k, args.alpha, args.a, args.lda,
      args.b, args.ldb, args.beta, args.c, args.ldc,
      static_cast<float*>(scratch), target_blocks_, stream_));
  return absl::OkStatus();
}

// ------------------------------------------------------------ row ops

absl::Status CudaBackend::Embed(const float* embeddings, int d_model,
                                const int32_t* tokens, const int64_t* positions,
                                int n, bool add_positions, float position_scale,
                                double pe_lam, float* x) {
  if (n <= 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_ASSIGN_OR_RETURN(const void* device_tokens,
                       UploadIndices(kTokens, tokens, sizeof(int32_t) * n));
  TVQ_ASSIGN_OR_RETURN(
      const void* device_positions,
      UploadIndices(kPositions, positions, sizeof(int64_t) * n));
  TVQ_CUDA_RETURN_IF_ERROR(cuda::Embed(
      embeddings, d_model, static_cast<const int32_t*>(device_tokens),
      static_cast<const int64_t*>(device_positions), n, add_positions,
      position_scale, pe_lam, x, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::RmsNorm(int rows, int width, const float* x,
                                  int x_stride, const float* gain,
                                  const float* bias, float* y, int y_stride) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cuda::RmsNorm(rows, width, x, x_stride, gain, bias,
                                         y, y_stride, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::HeadRmsNorm(int rows, int heads, int width, float* q,
                                      int q_stride, float scale) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(
      cuda::HeadRmsNorm(rows, heads, width, q, q_stride, scale, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Silu(int rows, int cols, float* x, int stride) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cuda::Silu(rows, cols, x, stride, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Multiply(int rows, int cols, float* x, int x_stride,
                                   const float* gate, int gate_stride) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(
      cuda::Multiply(rows, cols, x, x_stride, gate, gate_stride, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::LogSoftmax(int rows, int cols, const float* bias,
                                     float scale, float* x) {
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(
      cuda::LogSoftmax(rows, cols, bias, scale, x, stream_));
  return absl::OkStatus();
}

// ------------------------------------------------------------ attention

namespace {

cuda::AttentionDims Dims(const AttentionShape& shape) {
  return {shape.n_head, shape.n_code, shape.mem_len,
          shape.d_k,    shape.d_v,    shape.agg_cache};
}

cuda::StateView View(const SublayerState& state) {
  return {state.counts, state.means, state.window_codes, state.window_values};
}

absl::Status CheckShape(const AttentionShape& shape) {
  if (shape.n_head < 1 || shape.n_code < 1 || shape.mem_len < 1 ||
      shape.d_k < 1 || shape.d_v < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cuda: attention shape needs every size >= 1, got H=%d S=%d M=%d "
        "d_k=%d d_v=%d",
        shape.n_head, shape.n_code, shape.mem_len, shape.d_k, shape.d_v));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::VqAssign(int rows, const AttentionShape& shape,
                                   const AttentionTables& tables,
                                   const float* keys, int key_stride,
                                   int32_t* codes) {
  TVQ_RETURN_IF_ERROR(CheckShape(shape));
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_CUDA_RETURN_IF_ERROR(cuda::VqAssign(
      rows, shape.n_head, shape.n_code, shape.d_k, keys, key_stride,
      tables.codebook, tables.codebook_sq_norm, codes, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::BlockAttention(
    const AttentionShape& shape, const AttentionTables& tables,
    const SublayerState& state, int slot, int64_t first_position, int n,
    const float* q, int q_stride, const int32_t* codes, const float* values,
    int value_stride, float* out) {
  TVQ_RETURN_IF_ERROR(CheckShape(shape));
  if (n <= 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  const int64_t H = shape.n_head, S = shape.n_code, M = shape.mem_len,
                dk = shape.d_k, dv = shape.d_v;
  const cuda::AttentionDims dims = Dims(shape);
  const int64_t width = cuda::BlockWeightsWidth(dims, n);
  const int64_t query_floats = H * n * dk;
  const int64_t total_floats =
      2 * query_floats + H * n * S + H * n * (M + 1) + H * n * width;
  TVQ_ASSIGN_OR_RETURN(void* scratch, Scratch(sizeof(float) * total_floats));
  float* qu = static_cast<float*>(scratch);
  float* qv = qu + query_floats;
  float* code_scores = qv + query_floats;              // [H, n, S]
  float* relative_scores = code_scores + H * n * S;    // [H, n, M + 1]
  float* weights = relative_scores + H * n * (M + 1);  // [H, n, width]

  TVQ_CUDA_RETURN_IF_ERROR(cuda::PrepareBlockQueries(
      dims, n, q, q_stride, tables.u, tables.v, qu, qv, stream_));
  // Per head: code_scores = qu C^T, relative_scores = qv R^T.
  TVQ_RETURN_IF_ERROR(GemmBatched({.transpose_b = true,
                                   .m = n,
                                   .n = shape.n_code,
                                   .k = shape.d_k,
                                   .a = qu,
                                   .lda = shape.d_k,
                                   .b = tables.codebook,
                                   .ldb = shape.d_k,
                                   .c = code_scores,
                                   .ldc = shape.n_code},
                                  n * dk, S * dk, n * S, shape.n_head));
  TVQ_RETURN_IF_ERROR(GemmBatched({.transpose_b = true,
                                   .m = n,
                                   .n = shape.mem_len + 1,
                                   .k = shape.d_k,
                                   .a = qv,
                                   .lda = shape.d_k,
                                   .b = tables.relative,
                                   .ldb = shape.d_k,
                                   .c = relative_scores,
                                   .ldc = shape.mem_len + 1},
                                  n * dk, (M + 1) * dk, n * (M + 1),
                                  shape.n_head));
  TVQ_CUDA_RETURN_IF_ERROR(cuda::BlockAttentionWeights(
      dims, View(state), slot, first_position, n, code_scores, relative_scores,
      codes, weights, stream_));
  // out[:, h] = W_window window_values + W_block values (+ W_codes means).
  const int64_t slot_head = static_cast<int64_t>(slot) * H;
  const int out_stride = shape.n_head * shape.d_v;
  TVQ_RETURN_IF_ERROR(
      GemmBatched({.m = n,
                   .n = shape.d_v,
                   .k = shape.mem_len,
                   .a = weights,
                   .lda = static_cast<int>(width),
                   .b = state.window_values + slot_head * M * dv,
                   .ldb = shape.d_v,
                   .beta = 0,
                   .c = out,
                   .ldc = out_stride},
                  n * width, M * dv, dv, shape.n_head));
  TVQ_RETURN_IF_ERROR(GemmBatched({.m = n,
                                   .n = shape.d_v,
                                   .k = n,
                                   .a = weights + M,
                                   .lda = static_cast<int>(width),
                                   .b = values,
                                   .ldb = value_stride,
                                   .beta = 1,
                                   .c = out,
                                   .ldc = out_stride},
                                  n * width, dv, dv, shape.n_head));
  if (shape.agg_cache) {
    TVQ_RETURN_IF_ERROR(GemmBatched({.m = n,
                                     .n = shape.d_v,
                                     .k = shape.n_code,
                                     .a = weights + M + n,
                                     .lda = static_cast<int>(width),
                                     .b = state.means + slot_head * S * dv,
                                     .ldb = shape.d_v,
                                     .beta = 1,
                                     .c = out,
                                     .ldc = out_stride},
                                    n * width, S * dv, dv, shape.n_head));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::DecodeAttention(
    const AttentionShape& shape, const AttentionTables& tables,
    const SublayerState& state, const int* slots, const int64_t* positions,
    int batch, const float* q, int q_stride, const int32_t* codes,
    const float* values, int value_stride, float* out) {
  TVQ_RETURN_IF_ERROR(CheckShape(shape));
  if (batch <= 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  const cuda::AttentionDims dims = Dims(shape);
  TVQ_ASSIGN_OR_RETURN(const void* device_slots,
                       UploadIndices(kSlots, slots, sizeof(int32_t) * batch));
  TVQ_ASSIGN_OR_RETURN(
      const void* device_positions,
      UploadIndices(kPositions, positions, sizeof(int64_t) * batch));
  TVQ_ASSIGN_OR_RETURN(
      void* scratch, Scratch(sizeof(float) * cuda::DecodeAttentionScratchFloats(
                                                 dims, batch, target_blocks_)));
  const cuda::AttentionTableView table_view{tables.codebook, tables.relative,
                                            tables.u, tables.v};
  TVQ_CUDA_RETURN_IF_ERROR(cuda::DecodeAttention(
      dims, table_view, View(state), static_cast<const int32_t*>(device_slots),
      static_cast<const int64_t*>(device_positions), batch, q, q_stride, codes,
      values, value_stride, out, static_cast<float*>(scratch), target_blocks_,
      stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::UpdateState(const AttentionShape& shape,
                                      const SublayerState& state, int slot,
                                      int64_t first_position, int n,
                                      const int32_t* codes, const float* values,
                                      int value_stride) {
  TVQ_RETURN_IF_ERROR(CheckShape(shape));
  if (n <= 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  const cuda::AttentionDims dims = Dims(shape);
  TVQ_ASSIGN_OR_RETURN(
      void* scratch,
      Scratch(sizeof(int32_t) * cuda::UpdateStateScratchInts(dims, n)));
  TVQ_CUDA_RETURN_IF_ERROR(cuda::UpdateState(
      dims, View(state), slot, first_position, n, codes, values, value_stride,
      static_cast<int32_t*>(scratch), stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::UpdateStateBatch(
    const AttentionShape& shape, const SublayerState& state, const int* slots,
    const int64_t* positions, int batch, const int32_t* codes,
    const float* values, int value_stride) {
  TVQ_RETURN_IF_ERROR(CheckShape(shape));
  if (batch <= 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(Activate());
  TVQ_ASSIGN_OR_RETURN(const void* device_slots,
                       UploadIndices(kSlots, slots, sizeof(int32_t) * batch));
  TVQ_ASSIGN_OR_RETURN(
      const void* device_positions,
      UploadIndices(kPositions, positions, sizeof(int64_t) * batch));
  TVQ_CUDA_RETURN_IF_ERROR(cuda::UpdateStateBatch(
      Dims(shape), View(state), static_cast<const int32_t*>(device_slots),
      static_cast<const int64_t*>(device_positions), batch, codes, values,
      value_stride, stream_));
  return absl::OkStatus();
}

}  // namespace tvq::runtime

// The module's entry point: backend_factory.cc dlopens libtvq_cuda_backend.so
// and calls this (see shared_module.h for why the CUDA libraries are never
// linked into the server).
extern "C" __attribute__((visibility("default"))) void tvq_create_cuda_backend(
    const tvq::runtime::BackendOptions* options, int ordinal,
    absl::StatusOr<std::unique_ptr<tvq::runtime::Backend>>* result) {
  *result = tvq::runtime::CreateCudaBackend(*options, ordinal);
}
