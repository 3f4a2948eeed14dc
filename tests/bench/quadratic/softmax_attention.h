// Causal softmax attention over a KV cache, the attention of the quadratic
// baseline (tests/bench/quadratic): scores and weighted sums are
// Backend::Gemm calls (the same GEMMs the Transformer-VQ engine uses), the
// row softmax runs on the host threads of this class. CPU backend only: the
// backend interface has no exponential op, so on another backend Run
// returns Unimplemented.
#ifndef TVQ_TESTS_BENCH_QUADRATIC_SOFTMAX_ATTENTION_H_
#define TVQ_TESTS_BENCH_QUADRATIC_SOFTMAX_ATTENTION_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "kernels/cpu/parallel_for.h"
#include "server/backend/backend.h"

namespace tvq::bench {

struct AttentionDims {
  int n_head = 1;
  int d_k = 0;
  int d_v = 0;
  // One cache row: [k (n_head * d_k) | v (n_head * d_v)].
  int cache_row() const { return n_head * (d_k + d_v); }
};

class SoftmaxAttention {
 public:
  // `threads` host threads for the softmax (>= 1); scores for up to
  // `query_block` queries at a time against up to `max_keys` keys.
  static absl::StatusOr<std::unique_ptr<SoftmaxAttention>> Create(
      runtime::Backend& backend, const AttentionDims& dims, int threads,
      int query_block, int64_t max_keys);

  // Attention of n consecutive queries at positions first .. first + n - 1
  // of one sequence whose cache rows 0 .. first + n - 1 hold its keys and
  // values (the queries' own rows included): query i attends to keys
  // 0 .. first + i. q [n, H * d_k] with row stride q_stride, already scaled
  // (scores are plain dot products); out [n, H * d_v] with row stride
  // out_stride. `decode` picks the batch-invariant GEMM (as the engine's
  // decode does) instead of the BLAS one.
  absl::Status Run(const float* q, int q_stride, int64_t first, int n,
                   const float* cache, float* out, int out_stride,
                   bool decode);

 private:
  SoftmaxAttention(runtime::Backend& backend, const AttentionDims& dims,
                   int threads, int query_block, int64_t max_keys);

  runtime::Backend& backend_;
  AttentionDims dims_;
  kernels::cpu::ThreadPool pool_;
  int query_block_;
  int64_t max_keys_;
  runtime::DeviceBuffer scores_;  // [query_block, max_keys]
};

}  // namespace tvq::bench

#endif  // TVQ_TESTS_BENCH_QUADRATIC_SOFTMAX_ATTENTION_H_
