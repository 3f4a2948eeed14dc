// The batch-invariant decode GEMM (kernels/cpu/skinny_gemm_cpu.cc) for F32
// and BF16 weights: every row of c is bitwise the same whatever the number
// of rows computed with it and however the columns are split, and each
// value is within float32 rounding of a double-precision reference of the
// same (widened) operands.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/bf16.h"
#include "kernels/cpu/skinny_gemm_cpu.h"

namespace tvq::kernels::cpu {
namespace {

struct Case {
  bool transpose_b;
  DType dtype;
  int k, n;
};

class SkinnyGemmTest : public ::testing::TestWithParam<Case> {};

std::vector<float> Random(size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

TEST_P(SkinnyGemmTest, RowsIndependentOfBatchAndSplitAndAccurate) {
  const Case c = GetParam();
  constexpr int kMaxRows = 67;  // 8 full AVX-512 tiles, a 4-tile and tails
  const int k = c.k, n = c.n;
  const std::vector<float> a = Random(static_cast<size_t>(kMaxRows) * k, 1);
  const std::vector<float> b_values = Random(static_cast<size_t>(k) * n, 2);
  const std::vector<float> c0 = Random(static_cast<size_t>(kMaxRows) * n, 3);
  std::vector<BFloat16> b_bf16(b_values.size());
  F32ToBF16Array(static_cast<int64_t>(b_values.size()), b_values.data(),
                 b_bf16.data());
  // The weights as the kernel sees them (bf16 widened exactly).
  std::vector<float> b_seen = b_values;
  if (c.dtype == DType::kBF16) {
    BF16ToF32Array(static_cast<int64_t>(b_bf16.size()), b_bf16.data(),
                   b_seen.data());
  }
  const void* b = c.dtype == DType::kBF16 ? static_cast<const void*>(b_bf16.data())
                                          : static_cast<const void*>(b_values.data());
  const int ldb = c.transpose_b ? k : n;
  for (float beta : {0.0f, 1.0f}) {
    SCOPED_TRACE(::testing::Message() << "beta " << beta);
    // The full batch in one call over every column.
    std::vector<float> full = c0;
    SkinnyGemm(c.transpose_b, kMaxRows, n, k, a.data(), k, b, c.dtype, ldb,
               beta, full.data(), n, 0, n);
    for (int i = 0; i < kMaxRows; ++i) {
      for (int j = 0; j < n; ++j) {
        double reference = 0, magnitude = 0;
        for (int kk = 0; kk < k; ++kk) {
          const double weight =
              c.transpose_b ? b_seen[static_cast<size_t>(j) * k + kk]
                            : b_seen[static_cast<size_t>(kk) * n + j];
          reference += static_cast<double>(a[static_cast<size_t>(i) * k + kk]) * weight;
          magnitude += std::abs(a[static_cast<size_t>(i) * k + kk] * weight);
        }
        reference += beta * c0[static_cast<size_t>(i) * n + j];
        magnitude += std::abs(beta * c0[static_cast<size_t>(i) * n + j]);
        // float32 accumulation of k terms: |error| <= (k + 1) eps sum|terms|.
        ASSERT_NEAR(full[static_cast<size_t>(i) * n + j], reference,
                    (k + 2) * 6e-8 * magnitude + 1e-30)
            << "row " << i << " column " << j;
      }
    }
    // Every smaller batch (rows 0..m-1 of the same inputs), and a column
    // split at tile boundaries, give the same bits for each row.
    for (int m : {1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 32, 33, 64}) {
      std::vector<float> part = c0;
      const int split = std::min(n, kSkinnyGemmColumnBlock);
      SkinnyGemm(c.transpose_b, m, n, k, a.data(), k, b, c.dtype, ldb, beta,
                 part.data(), n, 0, split);
      SkinnyGemm(c.transpose_b, m, n, k, a.data(), k, b, c.dtype, ldb, beta,
                 part.data(), n, split, n);
      ASSERT_EQ(0, std::memcmp(part.data(), full.data(),
                               sizeof(float) * static_cast<size_t>(m) * n))
          << "batch of " << m << " differs from the batch of " << kMaxRows;
    }
    // One row alone, at an offset inside a bigger a (the decode path's
    // sequence i of a batch).
    for (int i : {0, 13, 66}) {
      std::vector<float> alone(static_cast<size_t>(n));
      std::copy_n(c0.begin() + static_cast<size_t>(i) * n, n, alone.begin());
      SkinnyGemm(c.transpose_b, 1, n, k, a.data() + static_cast<size_t>(i) * k,
                 k, b, c.dtype, ldb, beta, alone.data(), n, 0, n);
      ASSERT_EQ(0, std::memcmp(alone.data(), full.data() + static_cast<size_t>(i) * n,
                               sizeof(float) * n))
          << "row " << i << " alone";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SkinnyGemmTest,
    ::testing::Values(Case{false, DType::kF32, 256, 1152},
                      Case{false, DType::kBF16, 256, 1152},
                      Case{false, DType::kF32, 37, 77},  // column and k tails
                      Case{false, DType::kBF16, 37, 77},
                      Case{true, DType::kF32, 256, 259},  // tied output head
                      Case{true, DType::kBF16, 256, 259},
                      Case{true, DType::kF32, 21, 9},
                      Case{true, DType::kBF16, 21, 9}),
    [](const auto& info) {
      return std::string(info.param.transpose_b ? "Transposed" : "Plain") +
             DTypeName(info.param.dtype) + "_k" + std::to_string(info.param.k) +
             "_n" + std::to_string(info.param.n);
    });

TEST(SkinnyGemmIsa, NamesTheInstructionSetInUse) {
  const std::string isa = SkinnyGemmIsa();
  EXPECT_TRUE(isa == "avx512" || isa == "avx2" || isa == "generic") << isa;
  std::printf("SkinnyGemm instruction set: %s\n", isa.c_str());
}

TEST(BFloat16, RoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f + 1.0f / 256)), 1.0f);  // tie: to even
  EXPECT_EQ(BF16ToF32(F32ToBF16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(BF16ToF32(F32ToBF16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isinf(BF16ToF32(F32ToBF16(INFINITY))));
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(NAN))));
  // Relative error of one rounding <= 2^-8 (8 significant bits).
  std::mt19937 generator(5);
  std::uniform_real_distribution<float> exponent(-30.0f, 30.0f);
  for (int i = 0; i < 10000; ++i) {
    const float value = std::exp(exponent(generator));
    EXPECT_LE(std::abs(BF16ToF32(F32ToBF16(value)) - value), value * 0x1p-8f);
  }
}

}  // namespace
}  // namespace tvq::kernels::cpu
