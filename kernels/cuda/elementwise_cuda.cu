#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/device_compat.cuh"
#include "kernels/cuda/elementwise_cuda.cuh"
#include "kernels/cuda/reduce.cuh"

namespace tvq::kernels::cuda {
namespace {

// RMS LayerNorm epsilon (inside the root), as kernels/cpu.
constexpr float kRmsEpsilon = 1e-6f;
// Grid rows of the 2-D elementwise kernels (gridDim.y limit is 65535).
constexpr int kMaxGridRows = 65535;

template <typename T>
__global__ void FillKernel(T* data, size_t count, T value) {
  const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       i < count; i += step) {
    data[i] = value;
  }
}

template <typename T>
cudaError_t LaunchFill(T* data, size_t count, T value, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(
      count / kBlockThreads + 1 < 65536 ? count / kBlockThreads + 1 : 65536);
  auto* kernel = &FillKernel<T>;
  TVQ_LAUNCH(kernel, blocks, kBlockThreads, 0, stream)(data, count, value);
  return cudaGetLastError();
}

__device__ __forceinline__ float TableValue(const float* p) { return *p; }
__device__ __forceinline__ float TableValue(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

template <typename T>
__global__ void EmbedKernel(const T* __restrict__ embeddings, int d_model,
                            const int32_t* __restrict__ tokens,
                            const int64_t* __restrict__ positions,
                            bool add_positions, float position_scale,
                            double pe_lam, float* __restrict__ x) {
  const int64_t row = blockIdx.x;
  const T* source = embeddings + static_cast<int64_t>(tokens[row]) * d_model;
  float* target = x + row * d_model;
  const int half = d_model / 2;
  const double position = static_cast<double>(positions[row]);
  for (int c = threadIdx.x; c < d_model; c += blockDim.x) {
    float value = TableValue(source + c);
    if (add_positions && c < 2 * half) {
      const int i = c < half ? c : c - half;
      const double frequency =
          1.0 / pow(pe_lam, static_cast<double>(2 * i) / d_model);
      const double angle = position * frequency;
      const float wave = static_cast<float>(c < half ? sin(angle) : cos(angle));
      value += position_scale * wave;
    }
    target[c] = value;
  }
}

__global__ void RmsNormKernel(int width, const float* __restrict__ x,
                              int x_stride, const float* __restrict__ gain,
                              const float* __restrict__ bias, float* y,
                              int y_stride) {
  __shared__ float partial[kWarpSize];
  const int64_t row = blockIdx.x;
  // x and y may alias: each thread reads and writes only its own columns,
  // and the reduction barrier separates the reads from the writes.
  const float* in = x + row * x_stride;
  float* out = y + row * y_stride;
  float sum_squares = 0;
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    sum_squares += in[c] * in[c];
  }
  sum_squares = BlockAllReduce(sum_squares, partial, SumOp(), 0.0f);
  const float inverse =
      1.0f / sqrtf(kRmsEpsilon + sum_squares / static_cast<float>(width));
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    float value = in[c] * inverse;
    if (gain != nullptr) value *= gain[c];
    if (bias != nullptr) value += bias[c];
    out[c] = value;
  }
}

// One warp per (row, head) group.
__global__ void HeadRmsNormKernel(int rows, int heads, int width, float* q,
                                  int q_stride, float scale) {
  const int warps_per_block = blockDim.x / kWarpSize;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * warps_per_block +
                        threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (group >= static_cast<int64_t>(rows) * heads) return;  // whole warp
  const int64_t row = group / heads;
  const int head = static_cast<int>(group % heads);
  float* values = q + row * q_stride + static_cast<int64_t>(head) * width;
  float sum_squares = 0;
  for (int c = lane; c < width; c += kWarpSize) {
    sum_squares += values[c] * values[c];
  }
  sum_squares = WarpAllReduce(sum_squares, SumOp());
  const float inverse =
      scale / sqrtf(kRmsEpsilon + sum_squares / static_cast<float>(width));
  for (int c = lane; c < width; c += kWarpSize) values[c] *= inverse;
}

__global__ void SquaredReluKernel(int rows, int cols, float* x, int stride) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    float* value = x + row * stride + c;
    const float positive = *value > 0.0f ? *value : 0.0f;
    *value = positive * positive;
  }
}

__global__ void SiluKernel(int rows, int cols, float* x, int stride) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    float* value = x + row * stride + c;
    // x * sigmoid(x) as the CPU writes it; for very negative x, exp(-x)
    // overflows to inf and the quotient is the correct limit, -0.
    *value = *value / (1.0f + expf(-*value));
  }
}

__global__ void MultiplyKernel(int rows, int cols, float* x, int x_stride,
                               const float* __restrict__ gate,
                               int gate_stride) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    x[row * x_stride + c] *= gate[row * gate_stride + c];
  }
}

__global__ void LogSoftmaxKernel(int cols, const float* __restrict__ bias,
                                 float scale, float* x) {
  __shared__ float partial_max[kWarpSize];
  __shared__ double partial_sum[kWarpSize];
  float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  float maximum = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float value = (bias != nullptr ? row[c] + bias[c] : row[c]) * scale;
    row[c] = value;
    maximum = fmaxf(maximum, value);
  }
  maximum = BlockAllReduce(maximum, partial_max, MaxOp(), -INFINITY);
  double sum = 0;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    sum += exp(static_cast<double>(row[c] - maximum));
  }
  sum = BlockAllReduce(sum, partial_sum, SumOp(), 0.0);
  const float log_sum = maximum + static_cast<float>(log(sum));
  for (int c = threadIdx.x; c < cols; c += blockDim.x) row[c] -= log_sum;
}

dim3 ElementwiseGrid(int rows, int cols) {
  return dim3(CeilDiv(cols, kBlockThreads),
              static_cast<unsigned>(rows < kMaxGridRows ? rows : kMaxGridRows));
}

// Round to nearest even, NaN stays NaN (as kernels/bf16.h).
__global__ void RoundToBF16Kernel(int rows, int cols, const float* __restrict__ x,
                                  int x_stride, uint16_t* __restrict__ out) {
  const int64_t count = static_cast<int64_t>(rows) * cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < count; e += step) {
    const float value = x[(e / cols) * x_stride + e % cols];
    uint32_t bits;
    memcpy(&bits, &value, sizeof(bits));
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
      out[e] = static_cast<uint16_t>((bits >> 16) | 0x0040u);
    } else {
      out[e] = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
  }
}

}  // namespace

cudaError_t Fill(float* data, size_t count, float value, cudaStream_t stream) {
  return LaunchFill(data, count, value, stream);
}

cudaError_t FillInt(int32_t* data, size_t count, int32_t value,
                    cudaStream_t stream) {
  return LaunchFill(data, count, value, stream);
}

cudaError_t Embed(const float* embeddings, int d_model, const int32_t* tokens,
                  const int64_t* positions, int n, bool add_positions,
                  float position_scale, double pe_lam, float* x,
                  cudaStream_t stream) {
  if (n <= 0 || d_model <= 0) return cudaSuccess;
  auto* kernel = &EmbedKernel<float>;
  TVQ_LAUNCH(kernel, n, kBlockThreads, 0, stream)
  (embeddings, d_model, tokens, positions, add_positions, position_scale,
   pe_lam, x);
  return cudaGetLastError();
}

cudaError_t Embed(const uint16_t* embeddings, int d_model,
                  const int32_t* tokens, const int64_t* positions, int n,
                  bool add_positions, float position_scale, double pe_lam,
                  float* x, cudaStream_t stream) {
  if (n <= 0 || d_model <= 0) return cudaSuccess;
  auto* kernel = &EmbedKernel<uint16_t>;
  TVQ_LAUNCH(kernel, n, kBlockThreads, 0, stream)
  (embeddings, d_model, tokens, positions, add_positions, position_scale,
   pe_lam, x);
  return cudaGetLastError();
}

cudaError_t RoundToBF16(int rows, int cols, const float* x, int x_stride,
                        uint16_t* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  const int64_t count = static_cast<int64_t>(rows) * cols;
  const unsigned blocks = CeilDiv(count, kBlockThreads);
  TVQ_LAUNCH(RoundToBF16Kernel, blocks < 65535 ? blocks : 65535, kBlockThreads,
             0, stream)
  (rows, cols, x, x_stride, out);
  return cudaGetLastError();
}

cudaError_t RmsNorm(int rows, int width, const float* x, int x_stride,
                    const float* gain, const float* bias, float* y,
                    int y_stride, cudaStream_t stream) {
  if (rows <= 0 || width <= 0) return cudaSuccess;
  TVQ_LAUNCH(RmsNormKernel, rows, kBlockThreads, 0, stream)
  (width, x, x_stride, gain, bias, y, y_stride);
  return cudaGetLastError();
}

cudaError_t HeadRmsNorm(int rows, int heads, int width, float* q, int q_stride,
                        float scale, cudaStream_t stream) {
  if (rows <= 0 || heads <= 0 || width <= 0) return cudaSuccess;
  const int64_t groups = static_cast<int64_t>(rows) * heads;
  constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
  TVQ_LAUNCH(HeadRmsNormKernel, CeilDiv(groups, kWarpsPerBlock), kBlockThreads,
             0, stream)
  (rows, heads, width, q, q_stride, scale);
  return cudaGetLastError();
}

cudaError_t SquaredRelu(int rows, int cols, float* x, int stride,
                        cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TVQ_LAUNCH(SquaredReluKernel, ElementwiseGrid(rows, cols), kBlockThreads, 0,
             stream)
  (rows, cols, x, stride);
  return cudaGetLastError();
}

cudaError_t Silu(int rows, int cols, float* x, int stride,
                 cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TVQ_LAUNCH(SiluKernel, ElementwiseGrid(rows, cols), kBlockThreads, 0, stream)
  (rows, cols, x, stride);
  return cudaGetLastError();
}

cudaError_t Multiply(int rows, int cols, float* x, int x_stride,
                     const float* gate, int gate_stride, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TVQ_LAUNCH(MultiplyKernel, ElementwiseGrid(rows, cols), kBlockThreads, 0,
             stream)
  (rows, cols, x, x_stride, gate, gate_stride);
  return cudaGetLastError();
}

cudaError_t LogSoftmax(int rows, int cols, const float* bias, float scale,
                       float* x, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  TVQ_LAUNCH(LogSoftmaxKernel, rows, kBlockThreads, 0, stream)
  (cols, bias, scale, x);
  return cudaGetLastError();
}

}  // namespace tvq::kernels::cuda
