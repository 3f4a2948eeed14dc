#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention_cuda.cuh"
#include "kernels/cuda/device_compat.cuh"
#include "kernels/cuda/reduce.cuh"

namespace tvq::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
// Fewest weight rows one split of the decode value pass handles.
constexpr int kMinRowsPerSplit = 64;

// Distance, from a query at `position`, of the token in window slot m:
// M - ((m - position) mod M), in [1, M].
__device__ __forceinline__ int WindowDistance(int slot, int64_t position,
                                              int mem_len) {
  int64_t offset = (static_cast<int64_t>(slot) - position) % mem_len;
  if (offset < 0) offset += mem_len;
  return mem_len - static_cast<int>(offset);
}

// Softmax in place over `width` scores at `row` (-inf = excluded, weight
// 0), normalized by the sum. Every thread of the block must call it; each
// thread touches only the entries j = threadIdx.x (mod blockDim.x), which it
// wrote itself, so global memory needs no extra barrier.
__device__ void SoftmaxRowInPlace(float* row, int width, float maximum,
                                  float* partial) {
  maximum = BlockAllReduce(maximum, partial, MaxOp(), -INFINITY);
  float sum = 0;
  for (int j = threadIdx.x; j < width; j += blockDim.x) {
    const float score = row[j];
    const float weight = score == -INFINITY ? 0.0f : expf(score - maximum);
    row[j] = weight;
    sum += weight;
  }
  sum = BlockAllReduce(sum, partial, SumOp(), 0.0f);
  const float inverse = 1.0f / sum;
  for (int j = threadIdx.x; j < width; j += blockDim.x) row[j] *= inverse;
}

// ---- decode

int DecodeWeightCount(const AttentionShape& dims) {
  return dims.mem_len + 1 + dims.n_code;
}

// Splits of the weight rows so that the value pass of a single query has
// about `target_blocks` blocks. It does not depend on the batch, so that a
// query's sums are grouped the same way whatever its batch peers (decode
// results are batch-invariant bit for bit).
int DecodeRowSplits(const AttentionShape& dims, int target_blocks,
                    int column_chunk) {
  const int64_t blocks =
      static_cast<int64_t>(CeilDiv(dims.d_v, column_chunk)) * dims.n_head;
  if (blocks >= target_blocks) return 1;
  const int64_t wanted = (target_blocks + blocks - 1) / blocks;
  const int64_t most = DecodeWeightCount(dims) / kMinRowsPerSplit;
  int64_t splits = wanted < most ? wanted : most;
  if (splits < 1) splits = 1;
  if (splits > 1024) splits = 1024;
  return static_cast<int>(splits);
}

// One block per (query b, head h): code scores, relative scores, then the
// normalized weights [window M | own 1 | codes S] into `weights`.
__global__ void DecodeWeightsKernel(AttentionShape dims,
                                    AttentionTables tables, SublayerState state,
                                    const int32_t* __restrict__ slots,
                                    const int64_t* __restrict__ positions,
                                    const float* __restrict__ q, int q_stride,
                                    const int32_t* __restrict__ codes,
                                    float* __restrict__ weights) {
  __shared__ float partial[kWarpSize];
  TVQ_DYNAMIC_SHARED(float, shared);
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dk = dims.d_k;
  const int item = blockIdx.x;
  const int b = item / H, h = item % H;
  const int64_t slot_head = static_cast<int64_t>(slots[b]) * H + h;
  const int64_t position = positions[b];
  float* qu = shared;
  float* qv = qu + dk;
  float* scores = qv + dk;  // [S] code scores, then [M + 1] relative
  float* relative = scores + S;
  const float* query =
      q + static_cast<int64_t>(b) * q_stride + static_cast<int64_t>(h) * dk;
  for (int c = threadIdx.x; c < dk; c += blockDim.x) {
    qu[c] = query[c] + tables.u[static_cast<int64_t>(h) * dk + c];
    qv[c] = query[c] + tables.v[static_cast<int64_t>(h) * dk + c];
  }
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int t = warp; t < S + M + 1; t += kWarpsPerBlock) {
    const float* vector = t < S ? qu : qv;
    const float* row =
        t < S ? tables.codebook + (static_cast<int64_t>(h) * S + t) * dk
              : tables.relative +
                    (static_cast<int64_t>(h) * (M + 1) + (t - S)) * dk;
    float dot = 0;
    for (int c = lane; c < dk; c += kWarpSize)
      dot = fmaf(vector[c], row[c], dot);
    dot = WarpAllReduce(dot, SumOp());
    if (lane == 0) scores[t] = dot;
  }
  __syncthreads();
  const int width = M + 1 + S;
  float* row = weights + static_cast<int64_t>(item) * width;
  const int32_t* window_codes = state.window_codes + slot_head * M;
  const float* counts = state.counts + slot_head * S;
  const int32_t own_code = codes[item];
  float maximum = -INFINITY;
  for (int j = threadIdx.x; j < width; j += blockDim.x) {
    float score;
    if (j < M) {
      const int32_t code = window_codes[j];
      score = code < 0
                  ? -INFINITY
                  : scores[code] + relative[WindowDistance(j, position, M)];
    } else if (j == M) {
      score = scores[own_code] + relative[0];
    } else {
      const int s = j - M - 1;
      const float count = counts[s];
      score = dims.agg_cache && count > 0 ? scores[s] + logf(count) : -INFINITY;
    }
    row[j] = score;
    maximum = fmaxf(maximum, score);
  }
  SoftmaxRowInPlace(row, width, maximum, partial);
}

// Loads kVector consecutive floats (kVector 4: a 16-byte aligned float4).
template <int kVector>
__device__ __forceinline__ void LoadVector(const float* source, float* out) {
  if constexpr (kVector == 4) {
    const float4 value = *reinterpret_cast<const float4*>(source);
    out[0] = value.x;
    out[1] = value.y;
    out[2] = value.z;
    out[3] = value.w;
  } else {
    for (int e = 0; e < kVector; ++e) out[e] = source[e];
  }
}

// Block (column chunk, query item, row split): sum over the split's weight
// rows of weight * value row, columns [chunk * 32 * kVector, +32 * kVector).
// Warps take rows round-robin; rows of weight 0 are skipped (as the CPU).
template <int kVector>
__global__ void DecodeValuesKernel(AttentionShape dims, SublayerState state,
                                   const int32_t* __restrict__ slots,
                                   const float* __restrict__ values,
                                   int value_stride,
                                   const float* __restrict__ weights,
                                   int splits, float* __restrict__ out,
                                   float* __restrict__ partials) {
  constexpr int kChunk = kWarpSize * kVector;
  __shared__ float partial[kWarpsPerBlock][kChunk];
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dv = dims.d_v;
  const int item = blockIdx.y;
  const int b = item / H, h = item % H;
  const int64_t slot_head = static_cast<int64_t>(slots[b]) * H + h;
  const int width = M + 1 + S;
  const int rows_per_split = (width + splits - 1) / splits;
  const int row_begin = blockIdx.z * rows_per_split;
  const int row_end =
      row_begin + rows_per_split < width ? row_begin + rows_per_split : width;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int column = blockIdx.x * kChunk + lane * kVector;
  const bool active = column < dv;
  const float* row_weights = weights + static_cast<int64_t>(item) * width;
  const float* own_value = values + static_cast<int64_t>(b) * value_stride +
                           static_cast<int64_t>(h) * dv;
  float sum[kVector];
  for (int e = 0; e < kVector; ++e) sum[e] = 0.0f;
  for (int j = row_begin + warp; j < row_end; j += kWarpsPerBlock) {
    const float weight = row_weights[j];
    if (weight == 0.0f || !active) continue;
    const float* source;
    if (j < M) {
      source = state.window_values + (slot_head * M + j) * dv;
    } else if (j == M) {
      source = own_value;
    } else {
      source = state.means + (slot_head * S + (j - M - 1)) * dv;
    }
    float x[kVector];
    LoadVector<kVector>(source + column, x);
    for (int e = 0; e < kVector; ++e) sum[e] = fmaf(weight, x[e], sum[e]);
  }
  for (int e = 0; e < kVector; ++e) partial[warp][lane * kVector + e] = sum[e];
  __syncthreads();
  for (int t = threadIdx.x; t < kChunk; t += blockDim.x) {
    const int c = blockIdx.x * kChunk + t;
    if (c >= dv) continue;
    float total = 0;
    for (int w = 0; w < kWarpsPerBlock; ++w) total += partial[w][t];
    if (splits == 1) {
      out[static_cast<int64_t>(item) * dv + c] = total;
    } else {
      const int64_t items = gridDim.y;
      partials[(blockIdx.z * items + item) * dv + c] = total;
    }
  }
}

// out[item, c] = sum over splits (in order) of partials[split, item, c].
__global__ void SumSplitsKernel(int64_t count, int splits,
                                const float* __restrict__ partials,
                                float* __restrict__ out) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
       e < count; e += step) {
    float total = 0;
    for (int split = 0; split < splits; ++split) {
      total += partials[split * count + e];
    }
    out[e] = total;
  }
}

bool Aligned16(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

// ---- prefill

__global__ void PrepareBlockQueriesKernel(
    int n, int d_k, const float* __restrict__ q, int q_stride,
    const float* __restrict__ u, const float* __restrict__ v,
    float* __restrict__ qu, float* __restrict__ qv) {
  const int i = blockIdx.x, h = blockIdx.y;
  const float* query =
      q + static_cast<int64_t>(i) * q_stride + static_cast<int64_t>(h) * d_k;
  const int64_t target = (static_cast<int64_t>(h) * n + i) * d_k;
  for (int c = threadIdx.x; c < d_k; c += blockDim.x) {
    qu[target + c] = query[c] + u[static_cast<int64_t>(h) * d_k + c];
    qv[target + c] = query[c] + v[static_cast<int64_t>(h) * d_k + c];
  }
}

// Block (query i, head h). Window key m is at distance WindowDistance + i
// and block key j at i - j; beyond M ("bubble") they are attended without
// the position term with agg_cache and dropped without.
__global__ void BlockWeightsKernel(AttentionShape dims, SublayerState state,
                                   int slot, int64_t first_position, int n,
                                   const float* __restrict__ code_scores,
                                   const float* __restrict__ relative_scores,
                                   const int32_t* __restrict__ codes,
                                   float* __restrict__ weights) {
  __shared__ float partial[kWarpSize];
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len;
  const int i = blockIdx.x, h = blockIdx.y;
  const int64_t slot_head = static_cast<int64_t>(slot) * H + h;
  const int64_t query_row = static_cast<int64_t>(h) * n + i;
  const float* scores = code_scores + query_row * S;
  const float* relative = relative_scores + query_row * (M + 1);
  const int32_t* window_codes = state.window_codes + slot_head * M;
  const float* counts = state.counts + slot_head * S;
  const int width = M + n + S;
  float* row = weights + query_row * width;
  const bool agg = dims.agg_cache;
  float maximum = -INFINITY;
  for (int j = threadIdx.x; j < width; j += blockDim.x) {
    float score = -INFINITY;
    if (j < M) {
      const int32_t code = window_codes[j];
      const int distance = WindowDistance(j, first_position, M) + i;
      if (code >= 0 && (distance <= M || agg)) {
        score = scores[code] + (distance <= M ? relative[distance] : 0.0f);
      }
    } else if (j < M + n) {
      const int key = j - M;
      const int distance = i - key;
      if (distance >= 0 && (distance <= M || agg)) {
        score = scores[codes[static_cast<int64_t>(key) * H + h]] +
                (distance <= M ? relative[distance] : 0.0f);
      }
    } else {
      const int s = j - M - n;
      const float count = counts[s];
      if (agg && count > 0) score = scores[s] + logf(count);
    }
    row[j] = score;
    maximum = fmaxf(maximum, score);
  }
  SoftmaxRowInPlace(row, width, maximum, partial);
}

}  // namespace

size_t DecodeAttentionScratchFloats(const AttentionShape& dims, int batch,
                                    int target_blocks) {
  const size_t weights =
      static_cast<size_t>(batch) * dims.n_head * DecodeWeightCount(dims);
  // The vectorized path has the wider chunk, hence fewer blocks and the
  // most splits; take the larger of the two to be safe.
  const int vector_splits = DecodeRowSplits(dims, target_blocks, 4 * kWarpSize);
  const int scalar_splits = DecodeRowSplits(dims, target_blocks, kWarpSize);
  const int splits =
      vector_splits > scalar_splits ? vector_splits : scalar_splits;
  const size_t partials =
      splits > 1 ? static_cast<size_t>(splits) * batch * dims.n_head * dims.d_v
                 : 0;
  return weights + partials;
}

cudaError_t DecodeAttention(const AttentionShape& dims,
                            const AttentionTables& tables,
                            const SublayerState& state, const int32_t* slots,
                            const int64_t* positions, int batch, const float* q,
                            int q_stride, const int32_t* codes,
                            const float* values, int value_stride, float* out,
                            float* scratch, int target_blocks,
                            cudaStream_t stream) {
  if (batch <= 0) return cudaSuccess;
  const int items = batch * dims.n_head;
  if (items > 65535 || dims.mem_len < 1 || dims.n_code < 1) {
    return cudaErrorInvalidValue;
  }
  const int width = DecodeWeightCount(dims);
  float* weights = scratch;
  float* partials = scratch + static_cast<size_t>(items) * width;

  const size_t shared_bytes =
      sizeof(float) *
      (2 * static_cast<size_t>(dims.d_k) + dims.n_code + dims.mem_len + 1);
  if (shared_bytes > kDefaultSharedBytes) {
    const cudaError_t error = cudaFuncSetAttribute(
        DecodeWeightsKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(shared_bytes));
    if (error != cudaSuccess) return error;
  }
  TVQ_LAUNCH(DecodeWeightsKernel, items, kBlockThreads, shared_bytes, stream)
  (dims, tables, state, slots, positions, q, q_stride, codes, weights);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) return error;

  const bool vectorized = dims.d_v % 4 == 0 && value_stride % 4 == 0 &&
                          Aligned16(values) && Aligned16(state.window_values) &&
                          Aligned16(state.means);
  const int chunk = vectorized ? 4 * kWarpSize : kWarpSize;
  const int splits = DecodeRowSplits(dims, target_blocks, chunk);
  const dim3 grid(CeilDiv(dims.d_v, chunk), static_cast<unsigned>(items),
                  static_cast<unsigned>(splits));
  auto* kernel = vectorized ? &DecodeValuesKernel<4> : &DecodeValuesKernel<1>;
  TVQ_LAUNCH(kernel, grid, kBlockThreads, 0, stream)
  (dims, state, slots, values, value_stride, weights, splits, out, partials);
  error = cudaGetLastError();
  if (error != cudaSuccess || splits == 1) return error;

  const int64_t count = static_cast<int64_t>(items) * dims.d_v;
  const unsigned blocks = CeilDiv(count, kBlockThreads);
  TVQ_LAUNCH(SumSplitsKernel, blocks < 65536 ? blocks : 65536, kBlockThreads, 0,
             stream)
  (count, splits, partials, out);
  return cudaGetLastError();
}

cudaError_t PrepareBlockQueries(const AttentionShape& dims, int n,
                                const float* q, int q_stride, const float* u,
                                const float* v, float* qu, float* qv,
                                cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (dims.n_head > 65535) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(dims.n_head));
  const int threads =
      dims.d_k < kBlockThreads ? ((dims.d_k + 31) / 32) * 32 : kBlockThreads;
  TVQ_LAUNCH(PrepareBlockQueriesKernel, grid, threads, 0, stream)
  (n, dims.d_k, q, q_stride, u, v, qu, qv);
  return cudaGetLastError();
}

cudaError_t BlockAttentionWeights(const AttentionShape& dims,
                                  const SublayerState& state, int slot,
                                  int64_t first_position, int n,
                                  const float* code_scores,
                                  const float* relative_scores,
                                  const int32_t* codes, float* weights,
                                  cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (dims.n_head > 65535 || dims.mem_len < 1) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(dims.n_head));
  TVQ_LAUNCH(BlockWeightsKernel, grid, kBlockThreads, 0, stream)
  (dims, state, slot, first_position, n, code_scores, relative_scores, codes,
   weights);
  return cudaGetLastError();
}

}  // namespace tvq::kernels::cuda
