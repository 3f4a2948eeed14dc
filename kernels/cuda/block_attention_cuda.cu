#include "kernels/cuda/attention_cuda.cuh"
#include "kernels/cuda/block_attention_cuda.cuh"
#include "kernels/cuda/cublas_gemm_cuda.cuh"

namespace tvq::kernels::cuda {
namespace {

// c = op(a) op(b) + beta c with op(a) = a (never transposed here).
RowMajorGemm Product(bool transpose_b, int m, int n, int k, const float* a,
                     int lda, const float* b, int ldb, float beta, float* c,
                     int ldc) {
  RowMajorGemm gemm;
  gemm.transpose_b = transpose_b;
  gemm.m = m;
  gemm.n = n;
  gemm.k = k;
  gemm.a = a;
  gemm.lda = lda;
  gemm.b = b;
  gemm.ldb = ldb;
  gemm.beta = beta;
  gemm.c = c;
  gemm.ldc = ldc;
  return gemm;
}

}  // namespace

size_t BlockAttentionScratchFloats(const AttentionShape& shape, int n) {
  if (n <= 0) return 0;
  const size_t H = shape.n_head, S = shape.n_code, M = shape.mem_len,
               dk = shape.d_k;
  const size_t width = BlockWeightsWidth(shape, n);
  const size_t rows = H * static_cast<size_t>(n);
  // qu, qv [H, n, d_k]; code scores [H, n, S]; relative scores [H, n, M+1];
  // weights [H, n, M + n + S].
  return 2 * rows * dk + rows * S + rows * (M + 1) + rows * width;
}

ComposedStatus BlockAttention(const AttentionShape& shape,
                              const AttentionTables& tables,
                              const SublayerState& state, int slot,
                              int64_t first_position, int n, const float* q,
                              int q_stride, const int32_t* codes,
                              const float* values, int value_stride, float* out,
                              float* scratch, cublasHandle_t cublas,
                              cudaStream_t stream) {
  ComposedStatus status;
  if (n <= 0) return status;
  auto kernel = [&status](cudaError_t error, const char* call) {
    if (error != cudaSuccess && status.ok()) {
      status.cuda = error;
      status.call = call;
    }
    return status.ok();
  };
  auto gemm = [&status, cublas](const RowMajorGemm& args, int64_t stride_a,
                                int64_t stride_b, int64_t stride_c, int batch,
                                const char* call) {
    const cublasStatus_t result =
        PedanticGemm(cublas, args, stride_a, stride_b, stride_c, batch);
    if (result != CUBLAS_STATUS_SUCCESS && status.ok()) {
      status.cublas = result;
      status.call = call;
    }
    return status.ok();
  };
  const int64_t H = shape.n_head, S = shape.n_code, M = shape.mem_len,
                dk = shape.d_k, dv = shape.d_v;
  const int width = BlockWeightsWidth(shape, n);
  const int64_t query_floats = H * n * dk;
  float* qu = scratch;
  float* qv = qu + query_floats;
  float* code_scores = qv + query_floats;              // [H, n, S]
  float* relative_scores = code_scores + H * n * S;    // [H, n, M + 1]
  float* weights = relative_scores + H * n * (M + 1);  // [H, n, width]

  if (!kernel(PrepareBlockQueries(shape, n, q, q_stride, tables.u, tables.v, qu,
                                  qv, stream),
              "PrepareBlockQueries")) {
    return status;
  }
  // Per head: code_scores = qu C^T, relative_scores = qv R^T.
  if (!gemm(Product(true, n, shape.n_code, shape.d_k, qu, shape.d_k,
                    tables.codebook, shape.d_k, 0, code_scores, shape.n_code),
            n * dk, S * dk, n * S, shape.n_head, "code scores GEMM") ||
      !gemm(Product(true, n, shape.mem_len + 1, shape.d_k, qv, shape.d_k,
                    tables.relative, shape.d_k, 0, relative_scores,
                    shape.mem_len + 1),
            n * dk, (M + 1) * dk, n * (M + 1), shape.n_head,
            "relative scores GEMM")) {
    return status;
  }
  if (!kernel(BlockAttentionWeights(shape, state, slot, first_position, n,
                                    code_scores, relative_scores, codes,
                                    weights, stream),
              "BlockAttentionWeights")) {
    return status;
  }
  // out[:, h] = W_window window_values + W_block values (+ W_codes means).
  const int64_t slot_head = static_cast<int64_t>(slot) * H;
  const int out_stride = shape.n_head * shape.d_v;
  if (!gemm(Product(false, n, shape.d_v, shape.mem_len, weights, width,
                    state.window_values + slot_head * M * dv, shape.d_v, 0, out,
                    out_stride),
            static_cast<int64_t>(n) * width, M * dv, dv, shape.n_head,
            "window values GEMM") ||
      !gemm(Product(false, n, shape.d_v, n, weights + M, width, values,
                    value_stride, 1, out, out_stride),
            static_cast<int64_t>(n) * width, dv, dv, shape.n_head,
            "block values GEMM")) {
    return status;
  }
  if (shape.agg_cache) {
    gemm(Product(false, n, shape.d_v, shape.n_code, weights + M + n, width,
                 state.means + slot_head * S * dv, shape.d_v, 1, out,
                 out_stride),
         static_cast<int64_t>(n) * width, S * dv, dv, shape.n_head,
         "code means GEMM");
  }
  return status;
}

}  // namespace tvq::kernels::cuda
