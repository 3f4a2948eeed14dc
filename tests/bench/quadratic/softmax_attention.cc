#include "tests/bench/quadratic/softmax_attention.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"
#include "tests/bench/quadratic/softmax_rows.h"

namespace tvq::bench {

using runtime::F32;

SoftmaxAttention::SoftmaxAttention(runtime::Backend& backend,
                                   const AttentionDims& dims, int threads,
                                   int query_block, int64_t max_keys)
    : backend_(backend),
      dims_(dims),
      pool_(threads),
      query_block_(query_block),
      max_keys_(max_keys) {}

absl::StatusOr<std::unique_ptr<SoftmaxAttention>> SoftmaxAttention::Create(
    runtime::Backend& backend, const AttentionDims& dims, int threads,
    int query_block, int64_t max_keys) {
  if (backend.device() != runtime::DeviceKind::kCpu) {
    return absl::UnimplementedError(absl::StrFormat(
        "quadratic baseline: softmax attention runs on the CPU backend only "
        "(%s has no exponential op)",
        backend.Name()));
  }
  if (dims.n_head < 1 || dims.d_k < 1 || dims.d_v < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "quadratic baseline: attention needs n_head, d_k, d_v >= 1, got %d, "
        "%d, %d",
        dims.n_head, dims.d_k, dims.d_v));
  }
  if (threads < 1 || query_block < 1 || max_keys < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "quadratic baseline: threads, query block and max keys must be >= 1, "
        "got %d, %d, %d",
        threads, query_block, max_keys));
  }
  std::unique_ptr<SoftmaxAttention> attention(
      new SoftmaxAttention(backend, dims, threads, query_block, max_keys));
  TVQ_ASSIGN_OR_RETURN(
      attention->scores_,
      backend.Allocate(sizeof(float) * static_cast<size_t>(query_block) *
                       static_cast<size_t>(max_keys)));
  return attention;
}

absl::Status SoftmaxAttention::Run(const float* q, int q_stride, int64_t first,
                                   int n, const float* cache, float* out,
                                   int out_stride, bool decode) {
  if (n < 0 || first < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "quadratic attention: n (%d) and first (%d) must be >= 0", n, first));
  }
  if (first + n > max_keys_) {
    return absl::OutOfRangeError(absl::StrFormat(
        "quadratic attention: %d keys exceed the %d this attention was "
        "sized for",
        first + n, max_keys_));
  }
  const int H = dims_.n_head, dk = dims_.d_k, dv = dims_.d_v;
  const int row = dims_.cache_row();
  float* scores = scores_.as<float>();
  for (int begin = 0; begin < n; begin += query_block_) {
    const int rows = std::min(query_block_, n - begin);
    // Keys the last query of this block sees; earlier queries mask the tail.
    const int64_t keys = first + begin + rows;
    for (int h = 0; h < H; ++h) {
      TVQ_RETURN_IF_ERROR(backend_.Gemm(
          {.transpose_b = true,
           .a = F32(q + static_cast<int64_t>(begin) * q_stride + h * dk,
                    {rows, dk}, q_stride),
           .b = F32(cache + h * dk, {keys, dk}, row),
           .c = F32(scores, {rows, keys}),
           .batch_invariant = decode}));
      pool_.ParallelFor(rows, 1, [&](int64_t row_begin, int64_t row_end) {
        for (int64_t r = row_begin; r < row_end; ++r) {
          SoftmaxRowPrefix(scores + r * keys, first + begin + r + 1, keys);
        }
      });
      TVQ_RETURN_IF_ERROR(backend_.Gemm(
          {.a = F32(scores, {rows, keys}),
           .b = F32(cache + H * dk + h * dv, {keys, dv}, row),
           .c = F32(out + static_cast<int64_t>(begin) * out_stride + h * dv,
                    {rows, dv}, out_stride),
           .batch_invariant = decode}));
    }
  }
  return absl::OkStatus();
}

}  // namespace tvq::bench
