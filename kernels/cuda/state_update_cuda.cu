#include "kernels/cuda/device_compat.cuh"
#include "kernels/cuda/state_update_cuda.cuh"

namespace tvq::kernels::cuda {
namespace {

// UpdateMeansKernel: a block takes kCodesPerBlock codes (one per warp) and
// kColumnsPerLane * 32 columns; it reads the eviction schedule in tiles.
constexpr int kCodesPerBlock = kBlockThreads / kWarpSize;
constexpr int kColumnsPerLane = 4;
constexpr int kMeanColumns = kWarpSize * kColumnsPerLane;
constexpr int kScheduleTile = 1024;

__device__ __forceinline__ int RingSlot(int64_t position, int mem_len) {
  return static_cast<int>(position % mem_len);
}

// Block per head. evicted[h, i] = the code token i evicts: the window's
// code at its ring slot for i < M (-1 when empty), else the code of token
// i - M of this block. Then the ring codes take their final values.
__global__ void EvictionScheduleKernel(AttentionShape dims, SublayerState state,
                                       int slot, int64_t first_position, int n,
                                       const int32_t* __restrict__ codes,
                                       int32_t* __restrict__ evicted) {
  const int H = dims.n_head, M = dims.mem_len, h = blockIdx.x;
  int32_t* window_codes =
      state.window_codes + (static_cast<int64_t>(slot) * H + h) * M;
  int32_t* schedule = evicted + static_cast<int64_t>(h) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    schedule[i] = i >= M ? codes[static_cast<int64_t>(i - M) * H + h]
                         : window_codes[RingSlot(first_position + i, M)];
  }
  __syncthreads();  // every read of the old ring codes is done
  const int first_survivor = n > M ? n - M : 0;
  for (int i = first_survivor + threadIdx.x; i < n; i += blockDim.x) {
    window_codes[RingSlot(first_position + i, M)] =
        codes[static_cast<int64_t>(i) * H + h];
  }
}

// Block (column chunk, code chunk, head); warp w owns code s. Each thread
// walks, in token order, the evictions into s and updates its columns:
// n' = n + 1, m' = m + (v - m) / n', where v is the evicted token's value
// (the old ring value for i < M, else token i - M's). Counts are read
// only here (UpdateCountsKernel writes them afterwards).
__global__ void UpdateMeansKernel(AttentionShape dims, SublayerState state, int slot,
                                  int64_t first_position, int n,
                                  const int32_t* __restrict__ evicted,
                                  const float* __restrict__ values,
                                  int value_stride) {
  __shared__ int32_t tile_tokens[kScheduleTile];
  __shared__ int32_t tile_codes[kScheduleTile];
  __shared__ int tile_size;
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dv = dims.d_v;
  const int h = blockIdx.z;
  const int64_t slot_head = static_cast<int64_t>(slot) * H + h;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int first_code = blockIdx.y * kCodesPerBlock;
  const int code = first_code + warp;
  const int first_column = blockIdx.x * kMeanColumns;
  const int32_t* schedule = evicted + static_cast<int64_t>(h) * n;
  const float* window_values = state.window_values + slot_head * M * dv;
  float* means = state.means + (slot_head * S + (code < S ? code : 0)) * dv;

  float count = code < S ? state.counts[slot_head * S + code] : 0.0f;
  float mean[kColumnsPerLane];
  bool touched = false;
  for (int tile = 0; tile < n; tile += kScheduleTile) {
    const int tile_end = tile + kScheduleTile < n ? tile + kScheduleTile : n;
    if (warp == 0) {
      // Compact, in token order, the evictions into this block's codes.
      int size = 0;
      for (int base = tile; base < tile_end; base += kWarpSize) {
        const int i = base + lane;
        const int32_t e = i < tile_end ? schedule[i] : -1;
        const bool mine = e >= first_code && e < first_code + kCodesPerBlock;
        const unsigned ballot = __ballot_sync(kFullMask, mine);
        if (mine) {
          const int at = size + __popc(ballot & ((1u << lane) - 1u));
          tile_tokens[at] = i;
          tile_codes[at] = e;
        }
        size += __popc(ballot);
      }
      if (lane == 0) tile_size = size;
    }
    __syncthreads();
    const int size = tile_size;
    for (int t = 0; t < size; ++t) {
      if (tile_codes[t] != code) continue;
      const int i = tile_tokens[t];
      const float* source =
          i < M ? window_values +
                      static_cast<int64_t>(RingSlot(first_position + i, M)) * dv
                : values + static_cast<int64_t>(i - M) * value_stride +
                      static_cast<int64_t>(h) * dv;
      if (!touched) {
        for (int k = 0; k < kColumnsPerLane; ++k) {
          const int c = first_column + lane + k * kWarpSize;
          mean[k] = c < dv ? means[c] : 0.0f;
        }
        touched = true;
      }
      count += 1.0f;
      for (int k = 0; k < kColumnsPerLane; ++k) {
        const int c = first_column + lane + k * kWarpSize;
        if (c < dv) mean[k] += (source[c] - mean[k]) / count;
      }
    }
    __syncthreads();  // the tile is consumed before the next overwrites it
  }
  if (touched) {
    for (int k = 0; k < kColumnsPerLane; ++k) {
      const int c = first_column + lane + k * kWarpSize;
      if (c < dv) means[c] = mean[k];
    }
  }
}

// Block per head: counts[s] += 1 once per eviction into s (added one at a
// time, as the CPU does).
__global__ void UpdateCountsKernel(AttentionShape dims, SublayerState state,
                                   int slot, int n,
                                   const int32_t* __restrict__ evicted) {
  const int H = dims.n_head, S = dims.n_code, h = blockIdx.x;
  const int32_t* schedule = evicted + static_cast<int64_t>(h) * n;
  float* counts = state.counts + (static_cast<int64_t>(slot) * H + h) * S;
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    float count = counts[s];
    bool changed = false;
    for (int i = 0; i < n; ++i) {
      if (schedule[i] == s) {
        count += 1.0f;
        changed = true;
      }
    }
    if (changed) counts[s] = count;
  }
}

// The ring values of the tokens still in the window after the block
// (i >= n - M) take their slots. Runs after UpdateMeansKernel, which reads
// the old ring values.
__global__ void WriteWindowKernel(AttentionShape dims, SublayerState state, int slot,
                                  int64_t first_position, int n,
                                  const float* __restrict__ values,
                                  int value_stride) {
  const int H = dims.n_head, M = dims.mem_len, dv = dims.d_v, h = blockIdx.z;
  const int64_t slot_head = static_cast<int64_t>(slot) * H + h;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= dv) return;
  const int first_survivor = n > M ? n - M : 0;
  for (int i = first_survivor + blockIdx.y; i < n; i += gridDim.y) {
    const int64_t ring = RingSlot(first_position + i, M);
    state.window_values[(slot_head * M + ring) * dv + c] =
        values[static_cast<int64_t>(i) * value_stride +
               static_cast<int64_t>(h) * dv + c];
  }
}

// Block per (slot b, head h) of a decode batch; every column in one block,
// so the count and ring code can be updated after a barrier.
__global__ void UpdateStateBatchKernel(AttentionShape dims, SublayerState state,
                                       const int32_t* __restrict__ slots,
                                       const int64_t* __restrict__ positions,
                                       const int32_t* __restrict__ codes,
                                       const float* __restrict__ values,
                                       int value_stride) {
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dv = dims.d_v;
  const int item = blockIdx.x;
  const int b = item / H, h = item % H;
  const int64_t slot_head = static_cast<int64_t>(slots[b]) * H + h;
  const int ring = RingSlot(positions[b], M);
  int32_t* ring_code = state.window_codes + slot_head * M + ring;
  float* ring_value = state.window_values + (slot_head * M + ring) * dv;
  const int32_t evicted = *ring_code;
  const float count =
      evicted >= 0 ? state.counts[slot_head * S + evicted] + 1.0f : 0.0f;
  float* mean =
      state.means + (slot_head * S + (evicted >= 0 ? evicted : 0)) * dv;
  const float* value = values + static_cast<int64_t>(b) * value_stride +
                       static_cast<int64_t>(h) * dv;
  for (int c = threadIdx.x; c < dv; c += blockDim.x) {
    if (evicted >= 0) mean[c] += (ring_value[c] - mean[c]) / count;
    ring_value[c] = value[c];
  }
  __syncthreads();  // every thread has read the ring code and the count
  if (threadIdx.x == 0) {
    if (evicted >= 0) state.counts[slot_head * S + evicted] = count;
    *ring_code = codes[item];
  }
}

}  // namespace

cudaError_t UpdateState(const AttentionShape& dims, const SublayerState& state,
                        int slot, int64_t first_position, int n,
                        const int32_t* codes, const float* values,
                        int value_stride, int32_t* scratch,
                        cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (dims.n_head > 65535 || dims.mem_len < 1) return cudaErrorInvalidValue;
  const unsigned heads = static_cast<unsigned>(dims.n_head);
  TVQ_LAUNCH(EvictionScheduleKernel, heads, kBlockThreads, 0, stream)
  (dims, state, slot, first_position, n, codes, scratch);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) return error;
  const unsigned code_chunks = CeilDiv(dims.n_code, kCodesPerBlock);
  if (code_chunks > 65535) return cudaErrorInvalidValue;
  const dim3 means_grid(CeilDiv(dims.d_v, kMeanColumns), code_chunks, heads);
  TVQ_LAUNCH(UpdateMeansKernel, means_grid, kBlockThreads, 0, stream)
  (dims, state, slot, first_position, n, scratch, values, value_stride);
  if ((error = cudaGetLastError()) != cudaSuccess) return error;
  TVQ_LAUNCH(UpdateCountsKernel, heads, kBlockThreads, 0, stream)
  (dims, state, slot, n, scratch);
  if ((error = cudaGetLastError()) != cudaSuccess) return error;
  const int survivors = n < dims.mem_len ? n : dims.mem_len;
  const dim3 window_grid(
      CeilDiv(dims.d_v, kBlockThreads),
      static_cast<unsigned>(survivors < 65535 ? survivors : 65535), heads);
  TVQ_LAUNCH(WriteWindowKernel, window_grid, kBlockThreads, 0, stream)
  (dims, state, slot, first_position, n, values, value_stride);
  return cudaGetLastError();
}

cudaError_t UpdateStateBatch(const AttentionShape& dims, const SublayerState& state,
                             const int32_t* slots, const int64_t* positions,
                             int batch, const int32_t* codes,
                             const float* values, int value_stride,
                             cudaStream_t stream) {
  if (batch <= 0) return cudaSuccess;
  if (dims.mem_len < 1) return cudaErrorInvalidValue;
  const int64_t items = static_cast<int64_t>(batch) * dims.n_head;
  if (items > 2147483647) return cudaErrorInvalidValue;
  TVQ_LAUNCH(UpdateStateBatchKernel, static_cast<unsigned>(items),
             kBlockThreads, 0, stream)
  (dims, state, slots, positions, codes, values, value_stride);
  return cudaGetLastError();
}

}  // namespace tvq::kernels::cuda
