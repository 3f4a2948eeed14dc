#include <cmath>

#include "kernels/cuda/device_compat.cuh"
#include "kernels/cuda/vq_cuda.cuh"

namespace tvq::kernels::cuda {
namespace {

// A block scores kTileRows keys against the codebook, kTileCodes codes at a
// time, staging kTileDepth key dimensions per step in shared memory.
constexpr int kTileRows = 32;
constexpr int kTileCodes = 64;
constexpr int kTileDepth = 32;
constexpr int kVqThreads = 256;
// Thread layout: 16 row groups of 2 rows x 16 code lanes of 4 codes.
constexpr int kCodeLanes = 16;
constexpr int kRowsPerThread = kTileRows / (kVqThreads / kCodeLanes);  // 2
constexpr int kCodesPerThread = kTileCodes / kCodeLanes;               // 4

// True when (distance, index) beats (best, best_index): smaller distance,
// or equal distance and lower index. NaN never wins.
__device__ __forceinline__ bool Better(float distance, int index, float best,
                                       int best_index) {
  return distance < best || (distance == best && index < best_index);
}

__global__ void VqAssignKernel(int rows, int n_head, int n_code, int d_k,
                               const float* __restrict__ keys, int key_stride,
                               const float* __restrict__ codebook,
                               const float* __restrict__ codebook_sq_norm,
                               int32_t* __restrict__ codes) {
  __shared__ float key_tile[kTileRows][kTileDepth + 1];
  __shared__ float code_tile[kTileCodes][kTileDepth + 1];
  const int head = blockIdx.y;
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * kTileRows;
  const int code_lane = threadIdx.x % kCodeLanes;
  const int row_group = threadIdx.x / kCodeLanes;
  const float* head_keys = keys + static_cast<int64_t>(head) * d_k;
  const float* head_codebook =
      codebook + static_cast<int64_t>(head) * n_code * d_k;
  const float* head_sq_norm =
      codebook_sq_norm + static_cast<int64_t>(head) * n_code;

  float best[kRowsPerThread];
  int best_index[kRowsPerThread];
  for (int r = 0; r < kRowsPerThread; ++r) {
    best[r] = INFINITY;
    best_index[r] = 0;
  }

  for (int first_code = 0; first_code < n_code; first_code += kTileCodes) {
    float dot[kRowsPerThread][kCodesPerThread];
    for (int r = 0; r < kRowsPerThread; ++r) {
      for (int j = 0; j < kCodesPerThread; ++j) dot[r][j] = 0.0f;
    }
    for (int depth = 0; depth < d_k; depth += kTileDepth) {
      // Stage keys and codewords; out-of-range entries are zeros.
      for (int e = threadIdx.x; e < kTileRows * kTileDepth; e += kVqThreads) {
        const int r = e / kTileDepth, k = e % kTileDepth;
        const int64_t row = first_row + r;
        key_tile[r][k] = (row < rows && depth + k < d_k)
                             ? head_keys[row * key_stride + depth + k]
                             : 0.0f;
      }
      for (int e = threadIdx.x; e < kTileCodes * kTileDepth; e += kVqThreads) {
        const int s = e / kTileDepth, k = e % kTileDepth;
        const int code = first_code + s;
        code_tile[s][k] =
            (code < n_code && depth + k < d_k)
                ? head_codebook[static_cast<int64_t>(code) * d_k + depth + k]
                : 0.0f;
      }
      __syncthreads();
      for (int k = 0; k < kTileDepth; ++k) {
        float key[kRowsPerThread];
        for (int r = 0; r < kRowsPerThread; ++r) {
          key[r] = key_tile[row_group * kRowsPerThread + r][k];
        }
        for (int j = 0; j < kCodesPerThread; ++j) {
          const float word = code_tile[code_lane + j * kCodeLanes][k];
          for (int r = 0; r < kRowsPerThread; ++r) {
            dot[r][j] = fmaf(key[r], word, dot[r][j]);
          }
        }
      }
      __syncthreads();
    }
    for (int j = 0; j < kCodesPerThread; ++j) {
      const int code = first_code + code_lane + j * kCodeLanes;
      if (code >= n_code) continue;
      const float sq_norm = head_sq_norm[code];
      for (int r = 0; r < kRowsPerThread; ++r) {
        // 2 * dot is exact, so this rounds once like the CPU's sq - 2 dot.
        const float distance = sq_norm - 2.0f * dot[r][j];
        if (Better(distance, code, best[r], best_index[r])) {
          best[r] = distance;
          best_index[r] = code;
        }
      }
    }
  }

  // The 16 code lanes of a row group are 16 consecutive lanes of one warp.
  for (int r = 0; r < kRowsPerThread; ++r) {
    for (int offset = kCodeLanes / 2; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(kFullMask, best[r], offset);
      const int other_index = __shfl_xor_sync(kFullMask, best_index[r], offset);
      if (Better(other, other_index, best[r], best_index[r])) {
        best[r] = other;
        best_index[r] = other_index;
      }
    }
    const int64_t row = first_row + row_group * kRowsPerThread + r;
    if (code_lane == 0 && row < rows) {
      codes[row * n_head + head] = best_index[r];
    }
  }
}

}  // namespace

cudaError_t VqAssign(int rows, int n_head, int n_code, int d_k,
                     const float* keys, int key_stride, const float* codebook,
                     const float* codebook_sq_norm, int32_t* codes,
                     cudaStream_t stream) {
  if (rows <= 0 || n_head <= 0 || n_code <= 0) return cudaSuccess;
  if (n_head > 65535) return cudaErrorInvalidValue;
  const dim3 grid(CeilDiv(rows, kTileRows), static_cast<unsigned>(n_head));
  TVQ_LAUNCH(VqAssignKernel, grid, kVqThreads, 0, stream)
  (rows, n_head, n_code, d_k, keys, key_stride, codebook, codebook_sq_norm,
   codes);
  return cudaGetLastError();
}

}  // namespace tvq::kernels::cuda
