// Row-wise CUDA kernels: fills, embeddings, RMS norms, SiLU, gating,
// log-softmax. Same semantics as kernels/cpu/elementwise_cpu.h; every
// pointer is device memory; launches go on `stream` and return the launch
// error (cudaSuccess when there is nothing to do).
#ifndef TVQ_KERNELS_CUDA_ELEMENTWISE_CUDA_CUH_
#define TVQ_KERNELS_CUDA_ELEMENTWISE_CUDA_CUH_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace tvq::kernels::cuda {

// data[0 .. count) = value.
cudaError_t Fill(float* data, size_t count, float value, cudaStream_t stream);
cudaError_t FillInt(int32_t* data, size_t count, int32_t value,
                    cudaStream_t stream);

// x[i] = embeddings[tokens[i]] (+ position_scale * Sin(positions[i]) when
// add_positions, the sinusoid computed in double). x is [n, d_model].
cudaError_t Embed(const float* embeddings, int d_model, const int32_t* tokens,
                  const int64_t* positions, int n, bool add_positions,
                  float position_scale, double pe_lam, float* x,
                  cudaStream_t stream);
// The same for a bfloat16 table (the 16 stored bits of each value).
cudaError_t Embed(const uint16_t* embeddings, int d_model,
                  const int32_t* tokens, const int64_t* positions, int n,
                  bool add_positions, float position_scale, double pe_lam,
                  float* x, cudaStream_t stream);

// out[r, c] = x[r, c] rounded to bfloat16 (nearest even), rows of `cols`
// with row stride x_stride; out contiguous [rows, cols].
cudaError_t RoundToBF16(int rows, int cols, const float* x, int x_stride,
                        uint16_t* out, cudaStream_t stream);

// y = x / sqrt(1e-6 + mean(x^2)) * gain + bias per row (gain/bias may be
// null); x and y may alias.
cudaError_t RmsNorm(int rows, int width, const float* x, int x_stride,
                    const float* gain, const float* bias, float* y,
                    int y_stride, cudaStream_t stream);

// In place: every `width`-wide group of the `heads` groups of each row
// becomes RMS(group) * scale.
cudaError_t HeadRmsNorm(int rows, int heads, int width, float* q, int q_stride,
                        float scale, cudaStream_t stream);

// In place: x <- max(x, 0)^2 on a [rows, cols] block.
cudaError_t SquaredRelu(int rows, int cols, float* x, int stride,
                        cudaStream_t stream);

// In place: x <- x * sigmoid(x) on a [rows, cols] block.
cudaError_t Silu(int rows, int cols, float* x, int stride, cudaStream_t stream);

// In place: x <- x * gate on [rows, cols].
cudaError_t Multiply(int rows, int cols, float* x, int x_stride,
                     const float* gate, int gate_stride, cudaStream_t stream);

// In place on contiguous [rows, cols]: x <- log_softmax((x + bias) * scale)
// (bias [cols] may be null); the partition function is summed in double.
cudaError_t LogSoftmax(int rows, int cols, const float* bias, float scale,
                       float* x, cudaStream_t stream);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_ELEMENTWISE_CUDA_CUH_
