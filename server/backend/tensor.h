// Non-owning views of tensors that cross the backend interface: a data
// pointer, the element type (DType), a row-major shape of up to four dims
// and a row stride. Weights (GemmArgs::b, embeddings, norm gains, biases)
// travel as views, so that a backend can receive F32 or BF16 data without
// the model code changing; each op checks the dtype against
// Backend::Supports and refuses what it cannot run (op_checks.h).
//
// Constness: TensorView is read-only (const void*), MutableTensorView is
// written by the op; a MutableTensorView converts to a TensorView. The
// memory is backend memory unless the op's comment says "host".
#ifndef TVQ_SERVER_BACKEND_TENSOR_H_
#define TVQ_SERVER_BACKEND_TENSOR_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <type_traits>

#include "kernels/bf16.h"
#include "kernels/dtype.h"

namespace tvq::runtime {

using DType = ::tvq::kernels::DType;
using ::tvq::kernels::DTypeName;
using ::tvq::kernels::DTypeSize;
// bfloat16 bits and their exact conversions (kernels/bf16.h), for code
// above the backend that prepares BF16 weights or reads BF16 state.
using ::tvq::kernels::BF16ToF32;
using ::tvq::kernels::BFloat16;
using ::tvq::kernels::F32ToBF16;
using ::tvq::kernels::F32ToBF16Array;

inline constexpr int kMaxTensorRank = 4;

// `Pointer` is const void* (TensorView) or void* (MutableTensorView).
// rows() is the product of every dim but the last, cols() the last dim;
// row r starts row_stride elements after row r - 1 (row_stride >= cols();
// equal to cols() for contiguous data). A rank-0 view is one element; an
// empty view (data null, rank 0, no elements) stands for "absent".
template <typename Pointer>
struct BasicTensorView {
  Pointer data = nullptr;
  DType dtype = DType::kF32;
  int rank = 0;
  std::array<int64_t, kMaxTensorRank> dims{};
  int64_t row_stride = 0;

  bool empty() const { return data == nullptr; }
  int64_t dim(int index) const { return dims[index]; }
  int64_t cols() const { return rank == 0 ? 1 : dims[rank - 1]; }
  int64_t rows() const {
    int64_t rows = 1;
    for (int i = 0; i + 1 < rank; ++i) rows *= dims[i];
    return rows;
  }
  int64_t elements() const { return rows() * cols(); }
  // Bytes from data to the end of the last element.
  size_t span_bytes() const {
    const int64_t r = rows(), c = cols();
    if (r == 0 || c == 0) return 0;
    return static_cast<size_t>((r - 1) * row_stride + c) * DTypeSize(dtype);
  }
  // The data as T (check dtype first).
  template <typename T>
  auto as() const {
    if constexpr (std::is_const_v<std::remove_pointer_t<Pointer>>) {
      return static_cast<const T*>(data);
    } else {
      return static_cast<T*>(data);
    }
  }

  // A view of `data` with `shape` (row-major); row_stride 0 = contiguous.
  // Shapes of more than kMaxTensorRank dims fold their leading dims into
  // the first (rows() and cols() are unchanged).
  static BasicTensorView Of(Pointer data, DType dtype,
                            std::span<const int64_t> shape,
                            int64_t row_stride = 0) {
    BasicTensorView view;
    view.data = data;
    view.dtype = dtype;
    const size_t folded =
        shape.size() > kMaxTensorRank ? shape.size() - kMaxTensorRank : 0;
    view.rank = static_cast<int>(shape.size() - folded);
    for (int i = 0; i < view.rank; ++i) view.dims[i] = shape[folded + i];
    for (size_t i = 0; i < folded; ++i) view.dims[0] *= shape[i];
    view.row_stride = row_stride > 0 ? row_stride : view.cols();
    return view;
  }

  operator BasicTensorView<const void*>() const {  // NOLINT: widening const
    BasicTensorView<const void*> view;
    view.data = data;
    view.dtype = dtype;
    view.rank = rank;
    view.dims = dims;
    view.row_stride = row_stride;
    return view;
  }
};

using TensorView = BasicTensorView<const void*>;
using MutableTensorView = BasicTensorView<void*>;

// F32 views: F32(pointer, {rows, cols}, row_stride) etc.
inline TensorView F32(const float* data, std::initializer_list<int64_t> shape,
                      int64_t row_stride = 0) {
  return TensorView::Of(data, DType::kF32,
                        std::span<const int64_t>(shape.begin(), shape.size()),
                        row_stride);
}
inline MutableTensorView F32(float* data, std::initializer_list<int64_t> shape,
                             int64_t row_stride = 0) {
  return MutableTensorView::Of(
      data, DType::kF32, std::span<const int64_t>(shape.begin(), shape.size()),
      row_stride);
}

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BACKEND_TENSOR_H_
