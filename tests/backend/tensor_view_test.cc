// TensorView / MutableTensorView: shape arithmetic, strides, dtype sizes,
// folding of high ranks, and the mutable-to-const conversion.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "server/backend/tensor.h"

namespace tvq::runtime {
namespace {

TEST(TensorView, MatrixRowsColsStrideAndBytes) {
  std::vector<float> data(3 * 10);
  const TensorView view = F32(data.data(), {3, 7}, 10);
  EXPECT_EQ(view.rank, 2);
  EXPECT_EQ(view.rows(), 3);
  EXPECT_EQ(view.cols(), 7);
  EXPECT_EQ(view.elements(), 21);
  EXPECT_EQ(view.row_stride, 10);
  // Two full rows and the last row's 7 elements.
  EXPECT_EQ(view.span_bytes(), (2 * 10 + 7) * sizeof(float));
  EXPECT_EQ(view.as<float>(), data.data());
  EXPECT_FALSE(view.empty());
}

TEST(TensorView, ContiguousByDefaultAndVectorsAreOneRow) {
  std::vector<float> data(12);
  const TensorView vector = F32(data.data(), {12});
  EXPECT_EQ(vector.rows(), 1);
  EXPECT_EQ(vector.cols(), 12);
  EXPECT_EQ(vector.row_stride, 12);
  const int64_t shape[3] = {2, 3, 2};
  const TensorView cube = TensorView::Of(data.data(), DType::kF32, shape);
  EXPECT_EQ(cube.rows(), 6);
  EXPECT_EQ(cube.cols(), 2);
  EXPECT_EQ(cube.row_stride, 2);
}

TEST(TensorView, DTypeSetsTheByteSize) {
  std::vector<uint16_t> halves(8);
  const int64_t shape[2] = {2, 4};
  const TensorView view = TensorView::Of(halves.data(), DType::kBF16, shape);
  EXPECT_EQ(view.span_bytes(), 8 * sizeof(uint16_t));
  EXPECT_STREQ(DTypeName(view.dtype), "BF16");
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
}

TEST(TensorView, RanksAboveFourFoldIntoTheFirstDim) {
  std::vector<float> data(2 * 3 * 1 * 2 * 5);
  const int64_t shape[5] = {2, 3, 1, 2, 5};
  const TensorView view = TensorView::Of(data.data(), DType::kF32, shape);
  EXPECT_EQ(view.rank, kMaxTensorRank);
  EXPECT_EQ(view.dim(0), 6);
  EXPECT_EQ(view.rows(), 12);
  EXPECT_EQ(view.cols(), 5);
}

TEST(TensorView, EmptyAndScalarViews) {
  const TensorView absent;
  EXPECT_TRUE(absent.empty());
  EXPECT_EQ(absent.rank, 0);
  float value = 2.5f;
  const TensorView scalar = TensorView::Of(&value, DType::kF32, {});
  EXPECT_EQ(scalar.elements(), 1);
  EXPECT_EQ(scalar.span_bytes(), sizeof(float));
}

TEST(TensorView, MutableViewsConvertToReadOnlyViews) {
  std::vector<float> data(6);
  const MutableTensorView writable = F32(data.data(), {2, 3});
  writable.as<float>()[4] = 7.0f;
  const TensorView readable = writable;
  EXPECT_EQ(readable.data, data.data());
  EXPECT_EQ(readable.dtype, DType::kF32);
  EXPECT_EQ(readable.rows(), 2);
  EXPECT_EQ(readable.as<float>()[4], 7.0f);
}

}  // namespace
}  // namespace tvq::runtime
