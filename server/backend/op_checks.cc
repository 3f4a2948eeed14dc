#include "server/backend/op_checks.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"

namespace tvq::runtime::op_checks {
namespace {

// "CpuBackend::Gemm: " + message.
class OpContext {
 public:
  OpContext(const Backend& backend, Op op) : backend_(backend), op_(op) {}

  template <typename... Args>
  absl::Status Invalid(const absl::FormatSpec<Args...>& format,
                       const Args&... args) const {
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(), absl::StrFormat(format, args...)));
  }

  absl::Status NonNegative(int64_t value, std::string_view what) const {
    if (value >= 0) return absl::OkStatus();
    return Invalid("%s must be >= 0, got %d", what, value);
  }
  absl::Status NotNull(const void* pointer, std::string_view what) const {
    if (pointer != nullptr) return absl::OkStatus();
    return Invalid("%s is null", what);
  }
  // A [rows, width] block with row stride `stride`.
  absl::Status Rows(int64_t rows, int64_t width, const void* data,
                    int64_t stride, std::string_view what) const {
    TVQ_RETURN_IF_ERROR(NonNegative(rows, "the row count"));
    TVQ_RETURN_IF_ERROR(NonNegative(width, "the row width"));
    if (rows == 0 || width == 0) return absl::OkStatus();
    TVQ_RETURN_IF_ERROR(NotNull(data, what));
    if (stride < width) {
      return Invalid(
          "the row stride of %s (%d) is less than its row width (%d)", what,
          stride, width);
    }
    return absl::OkStatus();
  }
  absl::Status Shape(const AttentionShape& shape) const {
    if (shape.n_head < 1 || shape.n_code < 1 || shape.mem_len < 1 ||
        shape.d_k < 1 || shape.d_v < 1) {
      return Invalid(
          "attention shape needs every size >= 1, got H=%d S=%d M=%d d_k=%d "
          "d_v=%d",
          shape.n_head, shape.n_code, shape.mem_len, shape.d_k, shape.d_v);
    }
    return absl::OkStatus();
  }
  absl::Status Tables(const AttentionTables& tables, bool needs_sq_norm,
                      bool needs_relative) const {
    // Scores and VQ distances are float32 on every backend (spec §5): the
    // tables they are computed from stay F32 whatever the weights' dtype.
    if (tables.dtype != DType::kF32) {
      return absl::UnimplementedError(absl::StrCat(
          backend_.Name(), "::", OpName(op_), " does not support ",
          DTypeName(tables.dtype), " attention tables yet"));
    }
    TVQ_RETURN_IF_ERROR(NotNull(tables.codebook, "the codebook"));
    if (needs_sq_norm) {
      TVQ_RETURN_IF_ERROR(
          NotNull(tables.codebook_sq_norm, "the codebook's squared norms"));
    }
    if (needs_relative) {
      TVQ_RETURN_IF_ERROR(NotNull(tables.relative, "the relative table"));
      TVQ_RETURN_IF_ERROR(NotNull(tables.u, "u"));
      TVQ_RETURN_IF_ERROR(NotNull(tables.v, "v"));
    }
    return absl::OkStatus();
  }
  absl::Status State(const SublayerState& state) const {
    TVQ_RETURN_IF_ERROR(Supported(state.dtype, "state"));
    TVQ_RETURN_IF_ERROR(NotNull(state.counts, "the state's counts"));
    TVQ_RETURN_IF_ERROR(NotNull(state.means, "the state's means"));
    TVQ_RETURN_IF_ERROR(
        NotNull(state.window_codes, "the state's window codes"));
    TVQ_RETURN_IF_ERROR(
        NotNull(state.window_values, "the state's window values"));
    if (state.num_slots < 1) {
      return Invalid("the state holds %d slots", state.num_slots);
    }
    return absl::OkStatus();
  }
  absl::Status Slot(int slot, const SublayerState& state) const {
    if (slot >= 0 && slot < state.num_slots) return absl::OkStatus();
    return absl::OutOfRangeError(absl::StrCat(
        Prefix(),
        absl::StrFormat("slot %d is outside [0, %d)", slot, state.num_slots)));
  }
  // Host array of `batch` slots: each in range, none twice.
  absl::Status Slots(const int* slots, int batch,
                     const SublayerState& state) const {
    TVQ_RETURN_IF_ERROR(NotNull(slots, "the slot array"));
    for (int b = 0; b < batch; ++b) TVQ_RETURN_IF_ERROR(Slot(slots[b], state));
    // Small batches (every decode step) compare pairwise, without memory.
    constexpr int kPairwiseLimit = 32;
    if (batch <= kPairwiseLimit) {
      for (int b = 1; b < batch; ++b) {
        for (int earlier = 0; earlier < b; ++earlier) {
          if (slots[earlier] == slots[b]) return Repeated(slots[b]);
        }
      }
      return absl::OkStatus();
    }
    std::vector<bool> seen(state.num_slots, false);
    for (int b = 0; b < batch; ++b) {
      if (seen[slots[b]]) return Repeated(slots[b]);
      seen[slots[b]] = true;
    }
    return absl::OkStatus();
  }
  absl::Status Repeated(int slot) const {
    return Invalid("slot %d appears twice in the batch", slot);
  }
  absl::Status Position(int64_t position) const {
    if (position >= 0) return absl::OkStatus();
    return Invalid("position must be >= 0, got %d", position);
  }
  absl::Status Supported(DType dtype, std::string_view operand) const {
    return DTypeSupported(backend_, op_, dtype, operand);
  }
  // An optional [width] vector (gain, bias): empty, or F32-or-supported with
  // at least `width` elements.
  absl::Status OptionalVector(const TensorView& vector, int64_t width,
                              std::string_view what) const {
    if (vector.empty()) return absl::OkStatus();
    TVQ_RETURN_IF_ERROR(Supported(vector.dtype, "weights"));
    if (vector.elements() < width) {
      return Invalid("%s has %d elements, the rows are %d wide", what,
                     vector.elements(), width);
    }
    return absl::OkStatus();
  }

 private:
  std::string Prefix() const {
    return absl::StrCat(backend_.Name(), "::", OpName(op_), ": ");
  }
  const Backend& backend_;
  Op op_;
};

// A matrix operand of a GEMM: `rows` x `cols` as stored.
absl::Status GemmOperand(const OpContext& context, const TensorView& view,
                         int64_t rows, int64_t cols, std::string_view what) {
  if (view.rank != 2 || view.dim(0) != rows || view.dim(1) != cols) {
    return context.Invalid("%s must be a [%d, %d] matrix, got rank %d [%d, %d]",
                           what, rows, cols, view.rank,
                           view.rank > 0 ? view.dim(0) : 0,
                           view.rank > 1 ? view.dim(1) : 0);
  }
  return context.Rows(rows, cols, view.data, view.row_stride, what);
}

}  // namespace

absl::Status DTypeSupported(const Backend& backend, Op op, DType dtype,
                            std::string_view operand) {
  if (backend.Supports(op, dtype)) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrFormat("%s::%s does not support %s %s yet", backend.Name(),
                      OpName(op), DTypeName(dtype), operand));
}

absl::Status UploadWeights(const Backend& backend, const TensorView& host,
                           const DeviceBuffer* storage) {
  const OpContext context(backend, Op::kUploadWeights);
  TVQ_RETURN_IF_ERROR(context.Supported(host.dtype, "weights"));
  if (storage == nullptr) return context.Invalid("storage is null");
  if (host.row_stride != host.cols()) {
    return context.Invalid(
        "weights must be contiguous (row stride %d, %d "
        "columns)",
        host.row_stride, host.cols());
  }
  if (host.elements() > 0)
    TVQ_RETURN_IF_ERROR(context.NotNull(host.data, "host"));
  return absl::OkStatus();
}

absl::Status Gemm(const Backend& backend, const GemmArgs& args) {
  const OpContext context(backend, Op::kGemm);
  if (args.a.dtype != DType::kF32 || args.c.dtype != DType::kF32) {
    return context.Invalid("activations a and c must be F32, got %s and %s",
                           DTypeName(args.a.dtype), DTypeName(args.c.dtype));
  }
  TVQ_RETURN_IF_ERROR(context.Supported(args.b.dtype, "weights"));
  if (args.c.rank != 2) {
    return context.Invalid("c must be a matrix, got rank %d", args.c.rank);
  }
  const int64_t m = args.m(), n = args.n(), k = args.k();
  TVQ_RETURN_IF_ERROR(context.Rows(m, n, args.c.data, args.c.row_stride, "c"));
  if (m == 0 || n == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(GemmOperand(context, args.a, args.transpose_a ? k : m,
                                  args.transpose_a ? m : k, "a"));
  TVQ_RETURN_IF_ERROR(GemmOperand(context, args.b, args.transpose_b ? n : k,
                                  args.transpose_b ? k : n, "b"));
  return absl::OkStatus();
}

absl::Status Embed(const Backend& backend, const TensorView& embeddings,
                   const int32_t* tokens, const int64_t* positions, int n,
                   const float* x) {
  const OpContext context(backend, Op::kEmbed);
  TVQ_RETURN_IF_ERROR(context.Supported(embeddings.dtype, "embeddings"));
  TVQ_RETURN_IF_ERROR(context.NonNegative(n, "n"));
  if (embeddings.rank != 2) {
    return context.Invalid(
        "the embedding table must be [V, d_model], got "
        "rank %d",
        embeddings.rank);
  }
  TVQ_RETURN_IF_ERROR(context.Rows(embeddings.rows(), embeddings.cols(),
                                   embeddings.data, embeddings.row_stride,
                                   "the embedding table"));
  if (n == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(context.NotNull(tokens, "tokens"));
  TVQ_RETURN_IF_ERROR(context.NotNull(positions, "positions"));
  return context.NotNull(x, "x");
}

absl::Status RmsNorm(const Backend& backend, int rows, int width,
                     const float* x, int x_stride, const TensorView& gain,
                     const TensorView& bias, const float* y, int y_stride) {
  const OpContext context(backend, Op::kRmsNorm);
  TVQ_RETURN_IF_ERROR(context.OptionalVector(gain, width, "gain"));
  TVQ_RETURN_IF_ERROR(context.OptionalVector(bias, width, "bias"));
  TVQ_RETURN_IF_ERROR(context.Rows(rows, width, x, x_stride, "x"));
  return context.Rows(rows, width, y, y_stride, "y");
}

absl::Status HeadRmsNorm(const Backend& backend, int rows, int heads, int width,
                         const float* q, int q_stride) {
  const OpContext context(backend, Op::kHeadRmsNorm);
  TVQ_RETURN_IF_ERROR(context.NonNegative(heads, "heads"));
  return context.Rows(rows, static_cast<int64_t>(heads) * width, q, q_stride,
                      "q");
}

absl::Status SquaredRelu(const Backend& backend, int rows, int cols,
                         const float* x, int stride) {
  return OpContext(backend, Op::kSquaredRelu).Rows(rows, cols, x, stride, "x");
}

absl::Status Silu(const Backend& backend, int rows, int cols, const float* x,
                  int stride) {
  return OpContext(backend, Op::kSilu).Rows(rows, cols, x, stride, "x");
}

absl::Status Multiply(const Backend& backend, int rows, int cols,
                      const float* x, int x_stride, const float* gate,
                      int gate_stride) {
  const OpContext context(backend, Op::kMultiply);
  TVQ_RETURN_IF_ERROR(context.Rows(rows, cols, x, x_stride, "x"));
  return context.Rows(rows, cols, gate, gate_stride, "gate");
}

absl::Status VqAssign(const Backend& backend, int rows,
                      const AttentionShape& shape,
                      const AttentionTables& tables, const float* keys,
                      int key_stride, const int32_t* codes) {
  const OpContext context(backend, Op::kVqAssign);
  TVQ_RETURN_IF_ERROR(context.Shape(shape));
  TVQ_RETURN_IF_ERROR(context.Tables(tables, /*needs_sq_norm=*/true,
                                     /*needs_relative=*/false));
  const int64_t key_width = static_cast<int64_t>(shape.n_head) * shape.d_k;
  TVQ_RETURN_IF_ERROR(context.Rows(rows, key_width, keys, key_stride, "keys"));
  if (rows > 0) TVQ_RETURN_IF_ERROR(context.NotNull(codes, "codes"));
  return absl::OkStatus();
}

absl::Status BlockAttention(const Backend& backend, const AttentionShape& shape,
                            const AttentionTables& tables,
                            const SublayerState& state, int slot,
                            int64_t first_position, int n, const float* q,
                            int q_stride, const int32_t* codes,
                            const float* values, int value_stride,
                            const float* out) {
  const OpContext context(backend, Op::kBlockAttention);
  TVQ_RETURN_IF_ERROR(context.Shape(shape));
  TVQ_RETURN_IF_ERROR(context.Tables(tables, false, true));
  TVQ_RETURN_IF_ERROR(context.State(state));
  TVQ_RETURN_IF_ERROR(context.Slot(slot, state));
  TVQ_RETURN_IF_ERROR(context.Position(first_position));
  const int64_t H = shape.n_head;
  TVQ_RETURN_IF_ERROR(context.Rows(n, H * shape.d_k, q, q_stride, "q"));
  TVQ_RETURN_IF_ERROR(
      context.Rows(n, H * shape.d_v, values, value_stride, "values"));
  if (n > 0) {
    TVQ_RETURN_IF_ERROR(context.NotNull(codes, "codes"));
    TVQ_RETURN_IF_ERROR(context.NotNull(out, "out"));
  }
  return absl::OkStatus();
}

absl::Status DecodeAttention(const Backend& backend,
                             const AttentionShape& shape,
                             const AttentionTables& tables,
                             const SublayerState& state, const int* slots,
                             const int64_t* positions, int batch,
                             const float* q, int q_stride, const int32_t* codes,
                             const float* values, int value_stride,
                             const float* out) {
  const OpContext context(backend, Op::kDecodeAttention);
  TVQ_RETURN_IF_ERROR(context.Shape(shape));
  TVQ_RETURN_IF_ERROR(context.Tables(tables, false, true));
  TVQ_RETURN_IF_ERROR(context.State(state));
  TVQ_RETURN_IF_ERROR(context.NonNegative(batch, "batch"));
  if (batch == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(context.Slots(slots, batch, state));
  TVQ_RETURN_IF_ERROR(context.NotNull(positions, "the position array"));
  for (int b = 0; b < batch; ++b) {
    TVQ_RETURN_IF_ERROR(context.Position(positions[b]));
  }
  const int64_t H = shape.n_head;
  TVQ_RETURN_IF_ERROR(context.Rows(batch, H * shape.d_k, q, q_stride, "q"));
  TVQ_RETURN_IF_ERROR(
      context.Rows(batch, H * shape.d_v, values, value_stride, "values"));
  TVQ_RETURN_IF_ERROR(context.NotNull(codes, "codes"));
  return context.NotNull(out, "out");
}

absl::Status UpdateState(const Backend& backend, const AttentionShape& shape,
                         const SublayerState& state, int slot,
                         int64_t first_position, int n, const int32_t* codes,
                         const float* values, int value_stride) {
  const OpContext context(backend, Op::kUpdateState);
  TVQ_RETURN_IF_ERROR(context.Shape(shape));
  TVQ_RETURN_IF_ERROR(context.State(state));
  TVQ_RETURN_IF_ERROR(context.Slot(slot, state));
  TVQ_RETURN_IF_ERROR(context.Position(first_position));
  TVQ_RETURN_IF_ERROR(
      context.Rows(n, static_cast<int64_t>(shape.n_head) * shape.d_v, values,
                   value_stride, "values"));
  if (n > 0) TVQ_RETURN_IF_ERROR(context.NotNull(codes, "codes"));
  return absl::OkStatus();
}

absl::Status UpdateStateBatch(const Backend& backend,
                              const AttentionShape& shape,
                              const SublayerState& state, const int* slots,
                              const int64_t* positions, int batch,
                              const int32_t* codes, const float* values,
                              int value_stride) {
  const OpContext context(backend, Op::kUpdateStateBatch);
  TVQ_RETURN_IF_ERROR(context.Shape(shape));
  TVQ_RETURN_IF_ERROR(context.State(state));
  TVQ_RETURN_IF_ERROR(context.NonNegative(batch, "batch"));
  if (batch == 0) return absl::OkStatus();
  TVQ_RETURN_IF_ERROR(context.Slots(slots, batch, state));
  TVQ_RETURN_IF_ERROR(context.NotNull(positions, "the position array"));
  for (int b = 0; b < batch; ++b) {
    TVQ_RETURN_IF_ERROR(context.Position(positions[b]));
  }
  TVQ_RETURN_IF_ERROR(
      context.Rows(batch, static_cast<int64_t>(shape.n_head) * shape.d_v,
                   values, value_stride, "values"));
  return context.NotNull(codes, "codes");
}

absl::Status LogSoftmax(const Backend& backend, int rows, int cols,
                        const TensorView& bias, const float* x) {
  const OpContext context(backend, Op::kLogSoftmax);
  TVQ_RETURN_IF_ERROR(context.OptionalVector(bias, cols, "bias"));
  return context.Rows(rows, cols, x, cols, "x");
}

}  // namespace tvq::runtime::op_checks
