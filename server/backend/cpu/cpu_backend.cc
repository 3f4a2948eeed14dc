#include "server/backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_format.h"
#include "kernels/bf16.h"
#include "kernels/cpu/attention_cpu.h"
#include "kernels/cpu/elementwise_cpu.h"
#include "kernels/cpu/skinny_gemm_cpu.h"
#include "kernels/cpu/state_update_cpu.h"
#include "kernels/cpu/vq_cpu.h"
#include "server/backend/op_checks.h"
#include "server/base/status_macros.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace tvq::runtime {
namespace {

namespace cpu = ::tvq::kernels::cpu;

int ResolveThreads(int requested) {
  if (requested > 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

// Rows per thread below which splitting costs more than it saves.
int64_t RowGrain(int64_t floats_per_row) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, floats_per_row));
}

// cpu::AbsorbToken on head `slot_head` (= slot * H + h) of `state`, for
// either state dtype.
void AbsorbInto(const AttentionShape& shape, const SublayerState& state,
                int64_t slot_head, int64_t position, int32_t code,
                const float* value) {
  const int64_t S = shape.n_code, M = shape.mem_len, dv = shape.d_v;
  float* counts = state.counts + slot_head * S;
  int32_t* window_codes = state.window_codes + slot_head * M;
  if (state.dtype == DType::kBF16) {
    auto* means = reinterpret_cast<kernels::BFloat16*>(state.means);
    auto* window_values =
        reinterpret_cast<kernels::BFloat16*>(state.window_values);
    cpu::AbsorbToken(shape.mem_len, shape.d_v, counts,
                     means + slot_head * S * dv, window_codes,
                     window_values + slot_head * M * dv, position, code, value);
    return;
  }
  cpu::AbsorbToken(shape.mem_len, shape.d_v, counts,
                   state.means + slot_head * S * dv, window_codes,
                   state.window_values + slot_head * M * dv, position, code,
                   value);
}

}  // namespace

CpuBackend::CpuBackend(int num_threads) : pool_(ResolveThreads(num_threads)) {
  openblas_set_num_threads(pool_.num_threads());
}

std::string CpuBackend::DeviceName() const {
  return absl::StrFormat("cpu (%d threads, OpenBLAS)", pool_.num_threads());
}

absl::StatusOr<DeviceBuffer> CpuBackend::Allocate(size_t bytes) {
  constexpr size_t kAlignment = 64;
  const size_t rounded =
      std::max(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  void* pointer = std::aligned_alloc(kAlignment, rounded);
  if (pointer == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("cpu: cannot allocate %d bytes", bytes));
  }
  std::memset(pointer, 0, rounded);
  return DeviceBuffer(pointer, bytes, [](void* p) { std::free(p); });
}

absl::Status CpuBackend::CopyToDevice(void* device_destination,
                                      const void* host_source, size_t bytes) {
  if (bytes > 0) std::memcpy(device_destination, host_source, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* host_destination,
                                    const void* device_source, size_t bytes) {
  if (bytes > 0) std::memcpy(host_destination, device_source, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyOnDevice(void* destination, const void* source,
                                      size_t bytes) {
  if (bytes > 0) std::memmove(destination, source, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Fill(float* data, size_t count, float value) {
  std::fill(data, data + count, value);
  return absl::OkStatus();
}

absl::Status CpuBackend::FillInt(int32_t* data, size_t count, int32_t value) {
  std::fill(data, data + count, value);
  return absl::OkStatus();
}

bool CpuBackend::Supports(Op op, DType dtype) const {
  if (dtype == DType::kF32) return true;
  if (dtype != DType::kBF16) return false;
  switch (op) {
    case Op::kUploadWeights:
    case Op::kGemm:
    case Op::kEmbed:
    case Op::kBlockAttention:
    case Op::kDecodeAttention:
    case Op::kUpdateState:
    case Op::kUpdateStateBatch:
      return true;
    default:  // norm gains, biases, codebooks: F32 only
      return false;
  }
}

absl::StatusOr<TensorView> CpuBackend::UploadWeights(const TensorView& host,
                                                     DeviceBuffer* storage) {
  TVQ_RETURN_IF_ERROR(op_checks::UploadWeights(*this, host, storage));
  return host;  // host memory is CPU memory: used in place
}

absl::Status CpuBackend::Gemm(const GemmArgs& args) {
  TVQ_RETURN_IF_ERROR(op_checks::Gemm(*this, args));
  const int m = args.m(), n = args.n(), k = args.k();
  if (m <= 0 || n <= 0) return absl::OkStatus();
  const float* a = args.a.as<float>();
  float* c = args.c.as<float>();
  const int lda = static_cast<int>(args.a.row_stride),
            ldb = static_cast<int>(args.b.row_stride),
            ldc = static_cast<int>(args.c.row_stride);
  if (args.batch_invariant && !args.transpose_a) {
    if (args.alpha != 1.0f) {
      return absl::InvalidArgumentError("batch-invariant GEMM needs alpha = 1");
    }
    // Decode batches: rows computed identically for any batch size; blocks
    // of kSkinnyGemmColumnBlock columns split across threads, so a thread
    // boundary never changes a tile.
    constexpr int kBlock = cpu::kSkinnyGemmColumnBlock;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    pool_.ParallelFor(blocks, 1, [&](int64_t begin, int64_t end) {
      cpu::SkinnyGemm(args.transpose_b, m, n, k, a, lda, args.b.data,
                      args.b.dtype, ldb, args.beta, c, ldc,
                      static_cast<int>(begin * kBlock),
                      static_cast<int>(std::min<int64_t>(n, end * kBlock)));
    });
    return absl::OkStatus();
  }
  const float* b = args.b.as<float>();
  if (args.b.dtype == DType::kBF16) {
    // Prefill-sized GEMMs: widen the weights once per call (exact) and let
    // OpenBLAS run the arithmetic; the widening is small next to m rows.
    const int64_t rows = args.b.rows(), cols = args.b.cols();
    gemm_weights_.resize(static_cast<size_t>(rows * cols));
    const auto* source = args.b.as<kernels::BFloat16>();
    pool_.ParallelFor(rows, RowGrain(cols), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        kernels::BF16ToF32Array(cols, source + r * args.b.row_stride,
                                gemm_weights_.data() + r * cols);
      }
    });
    b = gemm_weights_.data();
  }
  const int ldb_f32 = args.b.dtype == DType::kBF16
                          ? static_cast<int>(args.b.cols())
                          : ldb;
  cblas_sgemm(CblasRowMajor, args.transpose_a ? CblasTrans : CblasNoTrans,
              args.transpose_b ? CblasTrans : CblasNoTrans, m, n, k, args.alpha,
              a, lda, b, ldb_f32, args.beta, c, ldc);
  return absl::OkStatus();
}

absl::Status CpuBackend::Embed(const TensorView& embedding_table,
                               const int32_t* tokens, const int64_t* positions,
                               int n, bool add_positions, float position_scale,
                               double pe_lam, float* x) {
  TVQ_RETURN_IF_ERROR(
      op_checks::Embed(*this, embedding_table, tokens, positions, n, x));
  const int d_model = static_cast<int>(embedding_table.cols());
  pool_.ParallelFor(n, RowGrain(d_model * 8), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (embedding_table.dtype == DType::kBF16) {
        cpu::EmbedRow(embedding_table.as<kernels::BFloat16>(), d_model,
                      tokens[i], positions[i], add_positions, position_scale,
                      pe_lam, x + i * d_model);
      } else {
        cpu::EmbedRow(embedding_table.as<float>(), d_model, tokens[i],
                      positions[i], add_positions, position_scale, pe_lam,
                      x + i * d_model);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::RmsNorm(int rows, int width, const float* x,
                                 int x_stride, const TensorView& gain_view,
                                 const TensorView& bias_view, float* y,
                                 int y_stride) {
  TVQ_RETURN_IF_ERROR(op_checks::RmsNorm(*this, rows, width, x, x_stride,
                                         gain_view, bias_view, y, y_stride));
  const float* gain = gain_view.as<float>();
  const float* bias = bias_view.as<float>();
  pool_.ParallelFor(rows, RowGrain(width), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cpu::RmsNormRow(width, x + i * x_stride, gain, bias, 1.0f,
                      y + i * y_stride);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::HeadRmsNorm(int rows, int heads, int width, float* q,
                                     int q_stride, float scale) {
  TVQ_RETURN_IF_ERROR(
      op_checks::HeadRmsNorm(*this, rows, heads, width, q, q_stride));
  pool_.ParallelFor(
      rows, RowGrain(heads * width), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          for (int h = 0; h < heads; ++h) {
            float* row = q + i * q_stride + h * width;
            cpu::RmsNormRow(width, row, nullptr, nullptr, scale, row);
          }
        }
      });
  return absl::OkStatus();
}

absl::Status CpuBackend::SquaredRelu(int rows, int cols, float* x,
                                     int stride) {
  TVQ_RETURN_IF_ERROR(op_checks::SquaredRelu(*this, rows, cols, x, stride));
  pool_.ParallelFor(rows, RowGrain(cols * 2), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cpu::SquaredReluRow(cols, x + i * stride);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Silu(int rows, int cols, float* x, int stride) {
  TVQ_RETURN_IF_ERROR(op_checks::Silu(*this, rows, cols, x, stride));
  pool_.ParallelFor(rows, RowGrain(cols * 8), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) cpu::SiluRow(cols, x + i * stride);
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Multiply(int rows, int cols, float* x, int x_stride,
                                  const float* gate, int gate_stride) {
  TVQ_RETURN_IF_ERROR(
      op_checks::Multiply(*this, rows, cols, x, x_stride, gate, gate_stride));
  pool_.ParallelFor(rows, RowGrain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cpu::MultiplyRow(cols, x + i * x_stride, gate + i * gate_stride);
    }
  });
  return absl::OkStatus();
}

float* CpuBackend::Scratch(size_t floats) {
  if (scratch_.size() < floats) scratch_.resize(floats);
  return scratch_.data();
}

absl::Status CpuBackend::VqAssign(int rows, const AttentionShape& shape,
                                  const AttentionTables& tables,
                                  const float* keys, int key_stride,
                                  int32_t* codes) {
  TVQ_RETURN_IF_ERROR(
      op_checks::VqAssign(*this, rows, shape, tables, keys, key_stride, codes));
  const int64_t S = shape.n_code, dk = shape.d_k;
  float* scratch = Scratch(static_cast<size_t>(rows) * S);
  for (int h = 0; h < shape.n_head; ++h) {
    cpu::VqAssign(rows, shape.n_code, shape.d_k, keys + h * dk, key_stride,
                  tables.codebook + h * S * dk, tables.codebook_sq_norm + h * S,
                  codes + h, shape.n_head, scratch);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::BlockAttention(
    const AttentionShape& shape, const AttentionTables& tables,
    const SublayerState& state, int slot, int64_t first_position, int n,
    const float* q, int q_stride, const int32_t* codes, const float* values,
    int value_stride, float* out) {
  TVQ_RETURN_IF_ERROR(op_checks::BlockAttention(
      *this, shape, tables, state, slot, first_position, n, q, q_stride, codes,
      values, value_stride, out));
  if (n <= 0) return absl::OkStatus();
  const int H = shape.n_head;
  for (int h = 0; h < H; ++h) {
    const cpu::HeadAttention head =
        cpu::SliceHead(shape, tables, state, slot, h);
    float* scratch = Scratch(cpu::BlockScratchFloats(head, n));
    cpu::BlockAttention(head, first_position, n, q + h * shape.d_k, q_stride,
                        codes + h, H, values + h * shape.d_v, value_stride,
                        out + h * shape.d_v, H * shape.d_v, scratch);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::DecodeAttention(
    const AttentionShape& shape, const AttentionTables& tables,
    const SublayerState& state, const int* slots, const int64_t* positions,
    int batch, const float* q, int q_stride, const int32_t* codes,
    const float* values, int value_stride, float* out) {
  TVQ_RETURN_IF_ERROR(op_checks::DecodeAttention(
      *this, shape, tables, state, slots, positions, batch, q, q_stride, codes,
      values, value_stride, out));
  if (batch <= 0) return absl::OkStatus();
  const int H = shape.n_head, dk = shape.d_k, dv = shape.d_v;
  const int64_t items = static_cast<int64_t>(batch) * H;
  const cpu::HeadAttention first =
      cpu::SliceHead(shape, tables, state, slots[0], 0);
  const int64_t weight_count = cpu::DecodeWeightCount(first);
  const int64_t scratch_count = cpu::DecodeScratchFloats(first);
  float* weights = Scratch(items * (weight_count + scratch_count));
  float* scratch = weights + items * weight_count;
  // Phase 1: softmax weights per (slot, head).
  pool_.ParallelFor(items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int b = static_cast<int>(item / H), h = static_cast<int>(item % H);
      const cpu::HeadAttention head =
          cpu::SliceHead(shape, tables, state, slots[b], h);
      cpu::DecodeAttentionWeights(head, positions[b], q + b * q_stride + h * dk,
                                  codes[item], weights + item * weight_count,
                                  scratch + item * scratch_count);
    }
  });
  // Phase 2: weighted value sums, a streaming read of each (slot, head)'s
  // window values and means. With at least one item per thread each item
  // reads its rows whole, in order (one sequential pass over its state);
  // with fewer (a batch of one) the columns are split in chunks so that
  // every thread streams. A column's sum is the same sequence of adds either
  // way, so the split never changes a bit.
  constexpr int kColumnChunk = 128;
  const int column_chunk = items >= pool_.num_threads() ? dv : kColumnChunk;
  const int chunks = (dv + column_chunk - 1) / column_chunk;
  pool_.ParallelFor(items * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t work = begin; work < end; ++work) {
      const int64_t item = work / chunks;
      const int chunk = static_cast<int>(work % chunks);
      const int b = static_cast<int>(item / H), h = static_cast<int>(item % H);
      const cpu::HeadAttention head =
          cpu::SliceHead(shape, tables, state, slots[b], h);
      cpu::DecodeWeightedValues(
          head, weights + item * weight_count,
          values + b * static_cast<int64_t>(value_stride) + h * dv,
          chunk * column_chunk, std::min(dv, (chunk + 1) * column_chunk),
          out + item * dv);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::UpdateState(const AttentionShape& shape,
                                     const SublayerState& state, int slot,
                                     int64_t first_position, int n,
                                     const int32_t* codes, const float* values,
                                     int value_stride) {
  TVQ_RETURN_IF_ERROR(op_checks::UpdateState(*this, shape, state, slot,
                                             first_position, n, codes, values,
                                             value_stride));
  const int64_t H = shape.n_head, dv = shape.d_v;
  pool_.ParallelFor(H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t h = begin; h < end; ++h) {
      const int64_t slot_head = slot * H + h;
      for (int i = 0; i < n; ++i) {
        AbsorbInto(shape, state, slot_head, first_position + i,
                   codes[i * H + h],
                   values + static_cast<int64_t>(i) * value_stride + h * dv);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::UpdateStateBatch(
    const AttentionShape& shape, const SublayerState& state, const int* slots,
    const int64_t* positions, int batch, const int32_t* codes,
    const float* values, int value_stride) {
  TVQ_RETURN_IF_ERROR(op_checks::UpdateStateBatch(*this, shape, state, slots,
                                                  positions, batch, codes,
                                                  values, value_stride));
  const int64_t H = shape.n_head, dv = shape.d_v;
  pool_.ParallelFor(batch * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H, h = item % H;
      const int64_t slot_head = slots[b] * H + h;
      AbsorbInto(shape, state, slot_head, positions[b], codes[item],
                 values + b * value_stride + h * dv);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::LogSoftmax(int rows, int cols,
                                    const TensorView& bias_view, float scale,
                                    float* x) {
  TVQ_RETURN_IF_ERROR(op_checks::LogSoftmax(*this, rows, cols, bias_view, x));
  const float* bias = bias_view.as<float>();
  pool_.ParallelFor(rows, RowGrain(cols * 4), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cpu::LogSoftmaxRow(cols, bias, scale, x + i * static_cast<int64_t>(cols));
    }
  });
  return absl::OkStatus();
}

}  // namespace tvq::runtime
