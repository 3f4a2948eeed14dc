// Parity of every kernel of kernels/cuda with kernels/cpu on seeded random
// inputs of awkward sizes (widths not multiples of the block or warp, S not
// a power of two, window boundaries t = M-1, M, M+1, batch 1 and ragged
// batches of scattered slots). Built twice: cuda_kernels_test runs it on a
// GPU (skipping without one), cuda_kernels_emulated_test on the CPU
// emulator. Every failure message carries the seed.
//
// These are kernel-level checks (launchers on raw pointers, no cuBLAS, no
// CUDA runtime beyond the launch), which is what the emulator can run; the
// backend-level checks of every op, CPU and CUDA, against float64
// references live in tests/backend/backend_conformance_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/attention_cpu.h"
#include "kernels/cpu/elementwise_cpu.h"
#include "kernels/cpu/state_update_cpu.h"
#include "kernels/cpu/vq_cpu.h"
#include "kernels/cuda/attention_cuda.cuh"
#include "kernels/cuda/elementwise_cuda.cuh"
#include "kernels/cuda/gemm_cuda.cuh"
#include "kernels/cuda/state_update_cuda.cuh"
#include "kernels/cuda/vq_cuda.cuh"
#include "tests/kernels/cuda_test_device.h"

namespace tvq::kernels::cuda::testing {
namespace {

namespace cpu = ::tvq::kernels::cpu;

#define TVQ_REQUIRE_DEVICE()                                \
  do {                                                      \
    const std::string tvq_why = TestDevice().Unavailable(); \
    if (!tvq_why.empty()) GTEST_SKIP() << tvq_why;          \
  } while (false)

// Asserts that a launcher succeeded and the device finished its work.
#define TVQ_ASSERT_LAUNCH(expression)                                       \
  do {                                                                      \
    const cudaError_t tvq_error = (expression);                             \
    ASSERT_EQ(tvq_error, cudaSuccess) << TestDevice().ErrorText(tvq_error); \
    const cudaError_t tvq_sync = TestDevice().Synchronize();                \
    ASSERT_EQ(tvq_sync, cudaSuccess) << TestDevice().ErrorText(tvq_sync);   \
  } while (false)

#define TVQ_ASSERT_ARRAYS(...)            \
  for (const bool tvq_ok : {__VA_ARGS__}) \
  ASSERT_TRUE(tvq_ok) << "device allocation or copy failed"

class Inputs {
 public:
  explicit Inputs(uint32_t seed) : engine_(seed) {}
  std::vector<float> Floats(size_t n, float low = -1, float high = 1) {
    std::uniform_real_distribution<float> distribution(low, high);
    std::vector<float> values(n);
    for (float& value : values) value = distribution(engine_);
    return values;
  }
  std::vector<float> Gaussian(size_t n) {
    std::normal_distribution<float> distribution(0.0f, 1.0f);
    std::vector<float> values(n);
    for (float& value : values) value = distribution(engine_);
    return values;
  }
  int Int(int low, int high) {  // inclusive
    return std::uniform_int_distribution<int>(low, high)(engine_);
  }
  std::vector<int32_t> Ints(size_t n, int low, int high) {
    std::vector<int32_t> values(n);
    for (int32_t& value : values) value = Int(low, high);
    return values;
  }

 private:
  std::mt19937 engine_;
};

std::string SeedTrace(uint32_t seed) { return "seed " + std::to_string(seed); }

// Every element within atol + rtol * |expected|; reports the worst one.
void ExpectClose(const std::vector<float>& actual,
                 const std::vector<float>& expected, double atol, double rtol,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst = 0;
  size_t worst_index = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double error = std::abs(static_cast<double>(actual[i]) - expected[i]);
    const double ratio =
        std::isnan(error) && !(std::isnan(actual[i]) && std::isnan(expected[i]))
            ? INFINITY
            : error / (atol + rtol * std::abs(expected[i]));
    if (ratio > worst || std::isnan(ratio)) {
      worst = std::isnan(ratio) ? worst : ratio;
      worst_index = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": worst element " << worst_index << " is "
                        << actual[worst_index] << ", expected "
                        << expected[worst_index];
}

// Bitwise-equal floats (the state update must match the CPU exactly).
template <typename T>
void ExpectIdentical(const std::vector<T>& actual,
                     const std::vector<T>& expected, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  size_t mismatches = 0, first = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(T)) != 0) {
      if (mismatches++ == 0) first = i;
    }
  }
  EXPECT_EQ(mismatches, 0u) << what << ": first at " << first << ": "
                            << (mismatches ? actual[first] : T()) << " vs "
                            << (mismatches ? expected[first] : T());
}

// ------------------------------------------------------------ elementwise

TEST(CudaKernels, FillWritesExactlyCountValues) {
  TVQ_REQUIRE_DEVICE();
  for (size_t count : {size_t{1}, size_t{255}, size_t{4099}}) {
    DeviceArray<float> floats(count + 7, 0.0f);
    DeviceArray<int32_t> ints(count + 7, 0);
    TVQ_ASSERT_ARRAYS(floats.ok(), ints.ok());
    TVQ_ASSERT_LAUNCH(Fill(floats.get(), count, 3.5f, nullptr));
    TVQ_ASSERT_LAUNCH(FillInt(ints.get(), count, -1, nullptr));
    std::vector<float> expected_floats(count + 7, 0.0f);
    std::vector<int32_t> expected_ints(count + 7, 0);
    std::fill_n(expected_floats.begin(), count, 3.5f);
    std::fill_n(expected_ints.begin(), count, -1);
    ExpectIdentical(floats.Read(), expected_floats, "Fill");
    ExpectIdentical(ints.Read(), expected_ints, "FillInt");
  }
}

TEST(CudaKernels, EmbedMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  const uint32_t seed = 11;
  SCOPED_TRACE(SeedTrace(seed));
  Inputs inputs(seed);
  const int vocab = 37, n = 6;
  for (int d_model : {18, 70}) {
    for (bool add_positions : {false, true}) {
      const std::vector<float> embeddings = inputs.Floats(vocab * d_model);
      const std::vector<int32_t> tokens = inputs.Ints(n, 0, vocab - 1);
      const std::vector<int64_t> positions = {0, 1, 7, 8, 12345, 9999999};
      DeviceArray<float> device_embeddings(embeddings);
      DeviceArray<int32_t> device_tokens(tokens);
      DeviceArray<int64_t> device_positions(positions);
      DeviceArray<float> x(static_cast<size_t>(n) * d_model);
      TVQ_ASSERT_ARRAYS(device_embeddings.ok(), device_tokens.ok(),
                        device_positions.ok(), x.ok());
      TVQ_ASSERT_LAUNCH(Embed(device_embeddings.get(), d_model,
                              device_tokens.get(), device_positions.get(), n,
                              add_positions, 0.7f, 10000.0, x.get(), nullptr));
      std::vector<float> expected(static_cast<size_t>(n) * d_model);
      for (int i = 0; i < n; ++i) {
        cpu::EmbedRow(embeddings.data(), d_model, tokens[i], positions[i],
                      add_positions, 0.7f, 10000.0,
                      expected.data() + static_cast<size_t>(i) * d_model);
      }
      ExpectClose(x.Read(), expected, 1e-6, 1e-6,
                  "Embed d_model " + std::to_string(d_model));
    }
  }
}

TEST(CudaKernels, RmsNormMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  const uint32_t seed = 12;
  SCOPED_TRACE(SeedTrace(seed));
  Inputs inputs(seed);
  const int rows = 3;
  for (int width : {1, 31, 257, 769}) {
    for (int variant = 0; variant < 4;
         ++variant) {  // none, gain, both, in place
      const bool with_gain = variant >= 1, with_bias = variant >= 2;
      const bool in_place = variant == 3;
      const int x_stride = width + 3;
      const int y_stride = in_place ? x_stride : width + 5;
      const std::vector<float> x = inputs.Floats(rows * x_stride, -3, 3);
      const std::vector<float> gain = inputs.Floats(width, 0.5, 1.5);
      const std::vector<float> bias = inputs.Floats(width);
      std::vector<float> expected =
          in_place ? x : std::vector<float>(rows * y_stride, 0.0f);
      for (int i = 0; i < rows; ++i) {
        cpu::RmsNormRow(width, x.data() + i * x_stride,
                        with_gain ? gain.data() : nullptr,
                        with_bias ? bias.data() : nullptr, 1.0f,
                        expected.data() + i * y_stride);
      }
      DeviceArray<float> device_x(x), device_gain(gain), device_bias(bias);
      DeviceArray<float> device_y(rows * y_stride, 0.0f);
      TVQ_ASSERT_ARRAYS(device_x.ok(), device_gain.ok(), device_bias.ok(),
                        device_y.ok());
      float* y = in_place ? device_x.get() : device_y.get();
      TVQ_ASSERT_LAUNCH(RmsNorm(rows, width, device_x.get(), x_stride,
                                with_gain ? device_gain.get() : nullptr,
                                with_bias ? device_bias.get() : nullptr, y,
                                y_stride, nullptr));
      ExpectClose(in_place ? device_x.Read() : device_y.Read(), expected, 1e-6,
                  1e-5,
                  "RmsNorm width " + std::to_string(width) + " variant " +
                      std::to_string(variant));
    }
  }
}

TEST(CudaKernels, HeadRmsNormMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  const uint32_t seed = 13;
  SCOPED_TRACE(SeedTrace(seed));
  Inputs inputs(seed);
  const int rows = 4, heads = 3;
  for (int width : {16, 33, 128}) {
    const int stride = heads * width + 7;
    const std::vector<float> q = inputs.Floats(rows * stride, -2, 2);
    std::vector<float> expected = q;
    for (int i = 0; i < rows; ++i) {
      for (int h = 0; h < heads; ++h) {
        float* group = expected.data() + i * stride + h * width;
        cpu::RmsNormRow(width, group, nullptr, nullptr, 0.3f, group);
      }
    }
    DeviceArray<float> device_q(q);
    TVQ_ASSERT_ARRAYS(device_q.ok());
    TVQ_ASSERT_LAUNCH(
        HeadRmsNorm(rows, heads, width, device_q.get(), stride, 0.3f, nullptr));
    ExpectClose(device_q.Read(), expected, 1e-6, 1e-5,
                "HeadRmsNorm width " + std::to_string(width));
  }
}

TEST(CudaKernels, SiluAndMultiplyMatchCpu) {
  TVQ_REQUIRE_DEVICE();
  const uint32_t seed = 14;
  SCOPED_TRACE(SeedTrace(seed));
  Inputs inputs(seed);
  const int rows = 5, cols = 300, stride = 307, gate_stride = 301;
  const std::vector<float> x = inputs.Floats(rows * stride, -20, 20);
  const std::vector<float> gate = inputs.Floats(rows * gate_stride, -2, 2);
  std::vector<float> expected_silu = x;
  for (int i = 0; i < rows; ++i)
    cpu::SiluRow(cols, expected_silu.data() + i * stride);
  std::vector<float> expected_product = expected_silu;
  for (int i = 0; i < rows; ++i) {
    cpu::MultiplyRow(cols, expected_product.data() + i * stride,
                     gate.data() + i * gate_stride);
  }
  DeviceArray<float> device_x(x), device_gate(gate);
  TVQ_ASSERT_ARRAYS(device_x.ok(), device_gate.ok());
  TVQ_ASSERT_LAUNCH(Silu(rows, cols, device_x.get(), stride, nullptr));
  const std::vector<float> silu = device_x.Read();
  ExpectClose(silu, expected_silu, 1e-6, 1e-6, "Silu");
  // Multiply from the CPU's SiLU output so that the product is exact.
  DeviceArray<float> device_silu(expected_silu);
  TVQ_ASSERT_ARRAYS(device_silu.ok());
  TVQ_ASSERT_LAUNCH(Multiply(rows, cols, device_silu.get(), stride,
                             device_gate.get(), gate_stride, nullptr));
  ExpectIdentical(device_silu.Read(), expected_product, "Multiply");
}

TEST(CudaKernels, LogSoftmaxMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  const uint32_t seed = 15;
  SCOPED_TRACE(SeedTrace(seed));
  Inputs inputs(seed);
  const int rows = 3;
  for (int cols : {1, 259, 1000}) {
    for (bool with_bias : {false, true}) {
      const std::vector<float> x = inputs.Floats(rows * cols, -10, 10);
      const std::vector<float> bias = inputs.Floats(cols);
      std::vector<float> expected = x;
      for (int i = 0; i < rows; ++i) {
        cpu::LogSoftmaxRow(cols, with_bias ? bias.data() : nullptr, 0.5f,
                           expected.data() + i * cols);
      }
      DeviceArray<float> device_x(x), device_bias(bias);
      TVQ_ASSERT_ARRAYS(device_x.ok(), device_bias.ok());
      TVQ_ASSERT_LAUNCH(LogSoftmax(rows, cols,
                                   with_bias ? device_bias.get() : nullptr,
                                   0.5f, device_x.get(), nullptr));
      ExpectClose(device_x.Read(), expected, 2e-6, 1e-6,
                  "LogSoftmax cols " + std::to_string(cols));
    }
  }
}

// ------------------------------------------------------------ GEMM

// Row-major c = alpha a op(b) + beta c in double.
std::vector<float> ReferenceGemm(bool transpose_b, int m, int n, int k,
                                 float alpha, const std::vector<float>& a,
                                 int lda, const std::vector<float>& b, int ldb,
                                 float beta, std::vector<float> c, int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double sum = 0;
      for (int kk = 0; kk < k; ++kk) {
        const double b_value = transpose_b
                                   ? b[static_cast<size_t>(j) * ldb + kk]
                                   : b[static_cast<size_t>(kk) * ldb + j];
        sum += a[static_cast<size_t>(i) * lda + kk] * b_value;
      }
      float& target = c[static_cast<size_t>(i) * ldc + j];
      target =
          static_cast<float>(alpha * sum + (beta == 0 ? 0.0 : beta * target));
    }
  }
  return c;
}

// Runs InvariantGemm on device copies; c starts as `c`.
std::vector<float> DeviceGemm(bool transpose_b, int m, int n, int k,
                              float alpha, const std::vector<float>& a, int lda,
                              const std::vector<float>& b, int ldb, float beta,
                              const std::vector<float>& c, int ldc,
                              int target_blocks) {
  DeviceArray<float> device_a(a), device_b(b), device_c(c);
  DeviceArray<float> scratch(
      InvariantGemmScratchFloats(transpose_b, m, n, k, target_blocks));
  EXPECT_TRUE(device_a.ok() && device_b.ok() && device_c.ok() && scratch.ok());
  const cudaError_t error = InvariantGemm(
      transpose_b, m, n, k, alpha, device_a.get(), lda, device_b.get(), ldb,
      beta, device_c.get(), ldc, scratch.get(), target_blocks, nullptr);
  EXPECT_EQ(error, cudaSuccess) << TestDevice().ErrorText(error);
  const cudaError_t sync = TestDevice().Synchronize();
  EXPECT_EQ(sync, cudaSuccess) << TestDevice().ErrorText(sync);
  return device_c.Read();
}

TEST(CudaKernels, InvariantGemmMatchesReferenceAndIsBatchInvariant) {
  TVQ_REQUIRE_DEVICE();
  uint32_t seed = 90;
  struct Case {
    int m, n, k;
  };
  for (const bool transpose_b : {false, true}) {
    for (const Case& shape : {Case{1, 1, 16}, Case{5, 259, 130},
                              Case{17, 40, 200}, Case{33, 70, 130}}) {
      for (const int target_blocks : {2, 1000}) {
        // Only the untransposed kernel splits k.
        if (transpose_b && target_blocks != 2) continue;
        for (const float beta : {0.0f, 1.0f}) {
          const int m = shape.m, n = shape.n, k = shape.k;
          SCOPED_TRACE(SeedTrace(++seed) + (transpose_b ? " b^T" : " b") +
                       " m " + std::to_string(m) + " n " + std::to_string(n) +
                       " k " + std::to_string(k) + " target_blocks " +
                       std::to_string(target_blocks) + " beta " +
                       std::to_string(beta));
          Inputs inputs(seed);
          const int lda = k + 3, ldb = (transpose_b ? k : n) + 5, ldc = n + 2;
          const float alpha = beta == 0 ? 0.5f : 1.0f;
          const std::vector<float> a =
              inputs.Floats(static_cast<size_t>(m) * lda);
          const std::vector<float> b =
              inputs.Floats(static_cast<size_t>(transpose_b ? n : k) * ldb);
          // beta = 0 must not read c: fill it with NaNs then.
          const std::vector<float> c =
              beta == 0 ? std::vector<float>(static_cast<size_t>(m) * ldc, NAN)
                        : inputs.Floats(static_cast<size_t>(m) * ldc);
          const std::vector<float> actual =
              DeviceGemm(transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                         ldc, target_blocks);
          std::vector<float> expected = ReferenceGemm(
              transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
          // The padding columns of c stay as they were.
          ExpectClose(actual, expected, 2e-5, 1e-5, "InvariantGemm");
          // Row i computed alone is bit-identical to row i in the batch.
          for (int i : {0, m - 1}) {
            const std::vector<float> a_row(
                a.begin() + static_cast<size_t>(i) * lda,
                a.begin() + static_cast<size_t>(i + 1) * lda);
            const std::vector<float> c_row(
                c.begin() + static_cast<size_t>(i) * ldc,
                c.begin() + static_cast<size_t>(i + 1) * ldc);
            const std::vector<float> alone =
                DeviceGemm(transpose_b, 1, n, k, alpha, a_row, lda, b, ldb,
                           beta, c_row, ldc, target_blocks);
            ExpectIdentical(
                alone,
                std::vector<float>(
                    actual.begin() + static_cast<size_t>(i) * ldc,
                    actual.begin() + static_cast<size_t>(i + 1) * ldc),
                "row " + std::to_string(i) + " alone vs in the batch");
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------ VQ

// Squared norms as the model computes them at load.
std::vector<float> SquaredNorms(const std::vector<float>& codebook, int d_k) {
  std::vector<float> norms(codebook.size() / d_k);
  for (size_t s = 0; s < norms.size(); ++s) {
    float sum = 0;
    for (int c = 0; c < d_k; ++c)
      sum += codebook[s * d_k + c] * codebook[s * d_k + c];
    norms[s] = sum;
  }
  return norms;
}

double DistanceDouble(const float* key, const float* code, int d_k) {
  double sum = 0;
  for (int c = 0; c < d_k; ++c) {
    const double difference = static_cast<double>(key[c]) - code[c];
    sum += difference * difference;
  }
  return sum;
}

TEST(CudaKernels, VqAssignMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  struct Case {
    int rows, heads, codes, d_k;
  };
  uint32_t seed = 20;
  for (const Case& c : {Case{1, 1, 1, 16}, Case{33, 3, 31, 16},
                        Case{70, 2, 65, 33}, Case{40, 1, 130, 128}}) {
    SCOPED_TRACE(SeedTrace(++seed));
    Inputs inputs(seed);
    const int key_stride = c.heads * c.d_k + 5;
    const std::vector<float> keys = inputs.Gaussian(c.rows * key_stride);
    const std::vector<float> codebook =
        inputs.Gaussian(c.heads * c.codes * c.d_k);
    const std::vector<float> norms = SquaredNorms(codebook, c.d_k);
    std::vector<int32_t> expected(c.rows * c.heads);
    std::vector<float> scratch(c.rows * c.codes);
    for (int h = 0; h < c.heads; ++h) {
      cpu::VqAssign(c.rows, c.codes, c.d_k, keys.data() + h * c.d_k, key_stride,
                    codebook.data() + h * c.codes * c.d_k,
                    norms.data() + h * c.codes, expected.data() + h, c.heads,
                    scratch.data());
    }
    DeviceArray<float> device_keys(keys), device_codebook(codebook),
        device_norms(norms);
    DeviceArray<int32_t> codes(c.rows * c.heads, -7);
    TVQ_ASSERT_ARRAYS(device_keys.ok(), device_codebook.ok(), device_norms.ok(),
                      codes.ok());
    TVQ_ASSERT_LAUNCH(VqAssign(
        c.rows, c.heads, c.codes, c.d_k, device_keys.get(), key_stride,
        device_codebook.get(), device_norms.get(), codes.get(), nullptr));
    const std::vector<int32_t> actual = codes.Read();
    for (int i = 0; i < c.rows; ++i) {
      for (int h = 0; h < c.heads; ++h) {
        const int32_t got = actual[i * c.heads + h],
                      want = expected[i * c.heads + h];
        ASSERT_GE(got, 0) << "row " << i << " head " << h;
        ASSERT_LT(got, c.codes) << "row " << i << " head " << h;
        if (got == want) continue;
        // Only a float32 near-tie may differ: both within rounding.
        const float* key = keys.data() + i * key_stride + h * c.d_k;
        const float* head_codebook = codebook.data() + h * c.codes * c.d_k;
        const double got_distance =
            DistanceDouble(key, head_codebook + got * c.d_k, c.d_k);
        const double want_distance =
            DistanceDouble(key, head_codebook + want * c.d_k, c.d_k);
        EXPECT_NEAR(got_distance, want_distance, 1e-5 * (1 + want_distance))
            << "row " << i << " head " << h << ": code " << got << " vs "
            << want;
      }
    }
  }
}

TEST(CudaKernels, VqAssignBreaksTiesTowardTheLowestIndex) {
  TVQ_REQUIRE_DEVICE();
  const uint32_t seed = 25;
  SCOPED_TRACE(SeedTrace(seed));
  Inputs inputs(seed);
  const int codes_count = 70, d_k = 8;  // two code tiles
  std::vector<float> codebook = inputs.Gaussian(codes_count * d_k);
  // Codewords 5, 40 and 66 are equal; key 0 is exactly that codeword.
  std::copy_n(codebook.begin() + 5 * d_k, d_k, codebook.begin() + 40 * d_k);
  std::copy_n(codebook.begin() + 5 * d_k, d_k, codebook.begin() + 66 * d_k);
  std::vector<float> keys(2 * d_k, 0.0f);
  std::copy_n(codebook.begin() + 5 * d_k, d_k, keys.begin());
  // Key 1 against an all-zero codebook: every distance ties at 0.
  const std::vector<float> zeros(codes_count * d_k, 0.0f);
  for (const std::vector<float>* book :
       std::vector<const std::vector<float>*>{&codebook, &zeros}) {
    const std::vector<float> norms = SquaredNorms(*book, d_k);
    DeviceArray<float> device_keys(keys), device_codebook(*book),
        device_norms(norms);
    DeviceArray<int32_t> codes(2, -7);
    TVQ_ASSERT_ARRAYS(device_keys.ok(), device_codebook.ok(), device_norms.ok(),
                      codes.ok());
    TVQ_ASSERT_LAUNCH(VqAssign(2, 1, codes_count, d_k, device_keys.get(), d_k,
                               device_codebook.get(), device_norms.get(),
                               codes.get(), nullptr));
    const std::vector<int32_t> actual = codes.Read();
    EXPECT_EQ(actual[0], book == &zeros ? 0 : 5);
    if (book == &zeros) {
      EXPECT_EQ(actual[1], 0);
    }
  }
}

// ------------------------------------------------------------ attention

struct SublayerData {
  AttentionShape dims;
  int slots = 0;
  std::vector<float> codebook, relative, u, v;
  std::vector<float> counts, means, window_values;
  std::vector<int32_t> window_codes;
};

// Random tables and state: counts are integers (about 40% zero), window
// slots about 20% empty.
SublayerData RandomSublayer(Inputs& inputs, const AttentionShape& dims,
                            int slots) {
  SublayerData data;
  data.dims = dims;
  data.slots = slots;
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len;
  data.codebook =
      inputs.Floats(static_cast<size_t>(H) * S * dims.d_k, -0.5, 0.5);
  data.relative =
      inputs.Floats(static_cast<size_t>(H) * (M + 1) * dims.d_k, -0.5, 0.5);
  data.u = inputs.Floats(H * dims.d_k, -0.3, 0.3);
  data.v = inputs.Floats(H * dims.d_k, -0.3, 0.3);
  const size_t slot_heads = static_cast<size_t>(slots) * H;
  data.counts.resize(slot_heads * S);
  for (float& count : data.counts) {
    count = inputs.Int(0, 9) < 4 ? 0.0f : static_cast<float>(inputs.Int(1, 50));
  }
  data.means = inputs.Floats(slot_heads * S * dims.d_v);
  data.window_codes.resize(slot_heads * M);
  for (int32_t& code : data.window_codes) {
    code = inputs.Int(0, 9) < 2 ? -1 : inputs.Int(0, S - 1);
  }
  data.window_values = inputs.Floats(slot_heads * M * dims.d_v);
  return data;
}

cpu::HeadAttention HeadView(const SublayerData& data, int slot, int head) {
  AttentionTables tables;
  tables.codebook = data.codebook.data();
  tables.relative = data.relative.data();
  tables.u = data.u.data();
  tables.v = data.v.data();
  SublayerState state;
  // The CPU kernels only read the state.
  state.counts = const_cast<float*>(data.counts.data());
  state.means = const_cast<float*>(data.means.data());
  state.window_codes = const_cast<int32_t*>(data.window_codes.data());
  state.window_values = const_cast<float*>(data.window_values.data());
  return cpu::SliceHead(data.dims, tables, state, slot, head);
}

// The sublayer in device memory.
struct DeviceSublayer {
  explicit DeviceSublayer(const SublayerData& data)
      : codebook(data.codebook),
        relative(data.relative),
        u(data.u),
        v(data.v),
        counts(data.counts),
        means(data.means),
        window_values(data.window_values),
        window_codes(data.window_codes) {}
  bool ok() const {
    return codebook.ok() && relative.ok() && u.ok() && v.ok() && counts.ok() &&
           means.ok() && window_values.ok() && window_codes.ok();
  }
  AttentionTables tables() const {
    AttentionTables tables;
    tables.codebook = codebook.get();
    tables.relative = relative.get();
    tables.u = u.get();
    tables.v = v.get();
    return tables;
  }
  SublayerState state() const {
    return {counts.get(), means.get(), window_codes.get(), window_values.get()};
  }
  DeviceArray<float> codebook, relative, u, v, counts, means, window_values;
  DeviceArray<int32_t> window_codes;
};

std::string DimsName(const AttentionShape& d) {
  return "H " + std::to_string(d.n_head) + " S " + std::to_string(d.n_code) +
         " M " + std::to_string(d.mem_len) + " dk " + std::to_string(d.d_k) +
         " dv " + std::to_string(d.d_v) + (d.agg_cache ? " agg" : " no-agg");
}

TEST(CudaKernels, DecodeAttentionMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  uint32_t seed = 30;
  // d_v 36 takes the float4 path, 37 the scalar one; S = 129, M = 64 lets
  // the value pass split its rows.
  for (const AttentionShape& dims : {AttentionShape{1, 13, 7, 16, 36, true},
                                    AttentionShape{2, 50, 16, 16, 37, true},
                                    AttentionShape{3, 13, 7, 33, 36, false},
                                    AttentionShape{1, 129, 64, 16, 36, true}}) {
    for (const std::vector<int>& slots :
         {std::vector<int>{2}, std::vector<int>{3, 0, 4, 1}}) {
      for (int target_blocks : {1, 100000}) {
        SCOPED_TRACE(SeedTrace(++seed) + " " + DimsName(dims) + " batch " +
                     std::to_string(slots.size()) + " target_blocks " +
                     std::to_string(target_blocks));
        Inputs inputs(seed);
        const int H = dims.n_head, M = dims.mem_len, dk = dims.d_k,
                  dv = dims.d_v;
        const int batch = static_cast<int>(slots.size());
        const SublayerData data = RandomSublayer(inputs, dims, 5);
        const std::vector<int64_t> all_positions = {M - 1, M, M + 1, 1234567};
        std::vector<int64_t> positions(batch);
        for (int b = 0; b < batch; ++b)
          positions[b] = all_positions[(b + seed) % 4];
        const int q_stride = H * dk + 3;
        const int value_stride = H * dv + (dv % 4 == 0 ? 4 : 3);
        const std::vector<float> q = inputs.Floats(batch * q_stride, -2, 2);
        const std::vector<int32_t> codes =
            inputs.Ints(batch * H, 0, dims.n_code - 1);
        const std::vector<float> values = inputs.Floats(batch * value_stride);

        std::vector<float> expected(static_cast<size_t>(batch) * H * dv);
        for (int b = 0; b < batch; ++b) {
          for (int h = 0; h < H; ++h) {
            const cpu::HeadAttention head = HeadView(data, slots[b], h);
            std::vector<float> weights(cpu::DecodeWeightCount(head));
            std::vector<float> scratch(cpu::DecodeScratchFloats(head));
            cpu::DecodeAttentionWeights(
                head, positions[b], q.data() + b * q_stride + h * dk,
                codes[b * H + h], weights.data(), scratch.data());
            cpu::DecodeWeightedValues(
                head, weights.data(), values.data() + b * value_stride + h * dv,
                0, dv, expected.data() + (static_cast<size_t>(b) * H + h) * dv);
          }
        }

        DeviceSublayer device(data);
        DeviceArray<int32_t> device_slots(
            std::vector<int32_t>(slots.begin(), slots.end()));
        DeviceArray<int64_t> device_positions(positions);
        DeviceArray<float> device_q(q), device_values(values);
        DeviceArray<int32_t> device_codes(codes);
        DeviceArray<float> out(expected.size(), NAN);
        DeviceArray<float> scratch(
            DecodeAttentionScratchFloats(dims, batch, target_blocks));
        TVQ_ASSERT_ARRAYS(device.ok(), device_slots.ok(), device_positions.ok(),
                          device_q.ok(), device_values.ok(), device_codes.ok(),
                          out.ok(), scratch.ok());
        TVQ_ASSERT_LAUNCH(DecodeAttention(
            dims, device.tables(), device.state(), device_slots.get(),
            device_positions.get(), batch, device_q.get(), q_stride,
            device_codes.get(), device_values.get(), value_stride, out.get(),
            scratch.get(), target_blocks, nullptr));
        const std::vector<float> batched = out.Read();
        ExpectClose(batched, expected, 1e-5, 1e-5, "DecodeAttention");
        // Each query alone gives bit-identical output (batch invariance).
        for (int b = 0; b < batch && batch > 1; ++b) {
          DeviceArray<int32_t> one_slot(std::vector<int32_t>{slots[b]});
          DeviceArray<int64_t> one_position(std::vector<int64_t>{positions[b]});
          DeviceArray<float> one_q(std::vector<float>(
              q.begin() + b * q_stride, q.begin() + (b + 1) * q_stride));
          DeviceArray<int32_t> one_codes(std::vector<int32_t>(
              codes.begin() + b * H, codes.begin() + (b + 1) * H));
          DeviceArray<float> one_values(
              std::vector<float>(values.begin() + b * value_stride,
                                 values.begin() + (b + 1) * value_stride));
          DeviceArray<float> one_out(static_cast<size_t>(H) * dv, NAN);
          DeviceArray<float> one_scratch(
              DecodeAttentionScratchFloats(dims, 1, target_blocks));
          TVQ_ASSERT_ARRAYS(one_slot.ok(), one_position.ok(), one_q.ok(),
                            one_codes.ok(), one_values.ok(), one_out.ok(),
                            one_scratch.ok());
          TVQ_ASSERT_LAUNCH(DecodeAttention(
              dims, device.tables(), device.state(), one_slot.get(),
              one_position.get(), 1, one_q.get(), q_stride, one_codes.get(),
              one_values.get(), value_stride, one_out.get(), one_scratch.get(),
              target_blocks, nullptr));
          ExpectIdentical(
              one_out.Read(),
              std::vector<float>(
                  batched.begin() + static_cast<size_t>(b) * H * dv,
                  batched.begin() + static_cast<size_t>(b + 1) * H * dv),
              "query " + std::to_string(b) + " alone vs in the batch");
        }
        // The state is read only.
        ExpectIdentical(device.counts.Read(), data.counts, "counts");
        ExpectIdentical(device.window_values.Read(), data.window_values,
                        "window values");
      }
    }
  }
}

TEST(CudaKernels, BlockAttentionMatchesCpu) {
  TVQ_REQUIRE_DEVICE();
  uint32_t seed = 40;
  for (const AttentionShape& dims : {AttentionShape{1, 13, 7, 16, 20, true},
                                    AttentionShape{2, 11, 8, 16, 12, false}}) {
    const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dk = dims.d_k,
              dv = dims.d_v;
    for (int n : {1, 6, M - 1, M, M + 1, 2 * M + 3}) {
      for (int64_t first_position : {int64_t{0}, int64_t{M - 1}, int64_t{M},
                                     int64_t{M + 1}, int64_t{45}}) {
        SCOPED_TRACE(SeedTrace(++seed) + " " + DimsName(dims) + " n " +
                     std::to_string(n) + " first_position " +
                     std::to_string(first_position));
        Inputs inputs(seed);
        const int slot = 1;
        const SublayerData data = RandomSublayer(inputs, dims, 3);
        const int q_stride = H * dk + 3, value_stride = H * dv + 2;
        const std::vector<float> q = inputs.Floats(n * q_stride, -2, 2);
        const std::vector<int32_t> codes = inputs.Ints(n * H, 0, S - 1);
        const std::vector<float> values = inputs.Floats(n * value_stride);

        std::vector<float> expected(static_cast<size_t>(n) * H * dv);
        for (int h = 0; h < H; ++h) {
          const cpu::HeadAttention head = HeadView(data, slot, h);
          std::vector<float> scratch(cpu::BlockScratchFloats(head, n));
          cpu::BlockAttention(head, first_position, n, q.data() + h * dk,
                              q_stride, codes.data() + h, H,
                              values.data() + h * dv, value_stride,
                              expected.data() + h * dv, H * dv, scratch.data());
        }

        // Device: queries, then (host GEMMs standing in for cuBLAS) scores,
        // then weights, then (host) the weighted sums.
        DeviceSublayer device(data);
        DeviceArray<float> device_q(q);
        DeviceArray<int32_t> device_codes(codes);
        DeviceArray<float> qu(static_cast<size_t>(H) * n * dk, NAN);
        DeviceArray<float> qv(static_cast<size_t>(H) * n * dk, NAN);
        TVQ_ASSERT_ARRAYS(device.ok(), device_q.ok(), device_codes.ok(),
                          qu.ok(), qv.ok());
        TVQ_ASSERT_LAUNCH(PrepareBlockQueries(dims, n, device_q.get(), q_stride,
                                              device.u.get(), device.v.get(),
                                              qu.get(), qv.get(), nullptr));
        const std::vector<float> host_qu = qu.Read(), host_qv = qv.Read();
        std::vector<float> expected_qu(host_qu.size()),
            expected_qv(host_qv.size());
        for (int h = 0; h < H; ++h) {
          for (int i = 0; i < n; ++i) {
            for (int c = 0; c < dk; ++c) {
              const float query = q[i * q_stride + h * dk + c];
              expected_qu[(h * n + i) * dk + c] = query + data.u[h * dk + c];
              expected_qv[(h * n + i) * dk + c] = query + data.v[h * dk + c];
            }
          }
        }
        ExpectIdentical(host_qu, expected_qu, "qu");
        ExpectIdentical(host_qv, expected_qv, "qv");

        std::vector<float> code_scores(static_cast<size_t>(H) * n * S);
        std::vector<float> relative_scores(static_cast<size_t>(H) * n *
                                           (M + 1));
        for (int h = 0; h < H; ++h) {
          for (int i = 0; i < n; ++i) {
            const float* a = host_qu.data() + (h * n + i) * dk;
            const float* b = host_qv.data() + (h * n + i) * dk;
            for (int s = 0; s < S; ++s) {
              code_scores[(h * n + i) * S + s] =
                  cpu::Dot(dk, a, data.codebook.data() + (h * S + s) * dk);
            }
            for (int d = 0; d <= M; ++d) {
              relative_scores[(h * n + i) * (M + 1) + d] = cpu::Dot(
                  dk, b, data.relative.data() + (h * (M + 1) + d) * dk);
            }
          }
        }
        const int width = BlockWeightsWidth(dims, n);
        DeviceArray<float> device_code_scores(code_scores),
            device_relative_scores(relative_scores);
        DeviceArray<float> weights(static_cast<size_t>(H) * n * width, NAN);
        TVQ_ASSERT_ARRAYS(device_code_scores.ok(), device_relative_scores.ok(),
                          weights.ok());
        TVQ_ASSERT_LAUNCH(BlockAttentionWeights(
            dims, device.state(), slot, first_position, n,
            device_code_scores.get(), device_relative_scores.get(),
            device_codes.get(), weights.get(), nullptr));
        const std::vector<float> host_weights = weights.Read();
        std::vector<float> out(expected.size());
        for (int h = 0; h < H; ++h) {
          const cpu::HeadAttention head = HeadView(data, slot, h);
          for (int i = 0; i < n; ++i) {
            const float* row =
                host_weights.data() + (static_cast<size_t>(h) * n + i) * width;
            double sum_weights = 0;
            for (int j = 0; j < width; ++j) sum_weights += row[j];
            EXPECT_NEAR(sum_weights, 1.0, 1e-5)
                << "query " << i << " head " << h;
            for (int c = 0; c < dv; ++c) {
              double sum = 0;
              for (int m = 0; m < M; ++m)
                sum += row[m] * static_cast<const float*>(head.window_values)[m * dv + c];
              for (int j = 0; j < n; ++j) {
                sum += row[M + j] * values[j * value_stride + h * dv + c];
              }
              if (dims.agg_cache) {
                for (int s = 0; s < S; ++s)
                  sum += row[M + n + s] * static_cast<const float*>(head.means)[s * dv + c];
              }
              out[static_cast<size_t>(i) * H * dv + h * dv + c] =
                  static_cast<float>(sum);
            }
          }
        }
        ExpectClose(out, expected, 1e-5, 1e-5, "BlockAttention");
      }
    }
  }
}

// ------------------------------------------------------------ state update

TEST(CudaKernels, UpdateStateMatchesCpuExactly) {
  TVQ_REQUIRE_DEVICE();
  uint32_t seed = 60;
  for (const AttentionShape& dims : {AttentionShape{2, 11, 8, 16, 37, true},
                                    AttentionShape{1, 5, 4, 16, 130, true}}) {
    const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dv = dims.d_v;
    for (int n : {1, 3, M - 1, M, M + 1, 2 * M + 3, 1030}) {
      for (int64_t first_position : {int64_t{0}, int64_t{5}, int64_t{M - 1},
                                     int64_t{M}, int64_t{M + 1}}) {
        if (n == 1030 && first_position != 5) continue;  // keep it quick
        SCOPED_TRACE(SeedTrace(++seed) + " " + DimsName(dims) + " n " +
                     std::to_string(n) + " first_position " +
                     std::to_string(first_position));
        Inputs inputs(seed);
        const int slot = 1;
        SublayerData expected = RandomSublayer(inputs, dims, 3);
        const int value_stride = H * dv + 3;
        const std::vector<int32_t> codes = inputs.Ints(n * H, 0, S - 1);
        const std::vector<float> values = inputs.Floats(n * value_stride);
        DeviceSublayer device(expected);
        DeviceArray<int32_t> device_codes(codes);
        DeviceArray<float> device_values(values);
        DeviceArray<int32_t> scratch(UpdateStateScratchInts(dims, n));
        TVQ_ASSERT_ARRAYS(device.ok(), device_codes.ok(), device_values.ok(),
                          scratch.ok());
        TVQ_ASSERT_LAUNCH(UpdateState(
            dims, device.state(), slot, first_position, n, device_codes.get(),
            device_values.get(), value_stride, scratch.get(), nullptr));
        for (int h = 0; h < H; ++h) {
          const int64_t slot_head = static_cast<int64_t>(slot) * H + h;
          for (int i = 0; i < n; ++i) {
            cpu::AbsorbToken(M, dv, expected.counts.data() + slot_head * S,
                             expected.means.data() + slot_head * S * dv,
                             expected.window_codes.data() + slot_head * M,
                             expected.window_values.data() + slot_head * M * dv,
                             first_position + i, codes[i * H + h],
                             values.data() + i * value_stride + h * dv);
          }
        }
        ExpectIdentical(device.counts.Read(), expected.counts, "counts");
        ExpectIdentical(device.means.Read(), expected.means, "means");
        ExpectIdentical(device.window_codes.Read(), expected.window_codes,
                        "window codes");
        ExpectIdentical(device.window_values.Read(), expected.window_values,
                        "window values");
      }
    }
  }
}

TEST(CudaKernels, UpdateStateBatchMatchesCpuExactly) {
  TVQ_REQUIRE_DEVICE();
  uint32_t seed = 80;
  const AttentionShape dims{2, 11, 8, 16, 37, true};
  const int H = dims.n_head, S = dims.n_code, M = dims.mem_len, dv = dims.d_v;
  for (const std::vector<int>& slots :
       {std::vector<int>{3}, std::vector<int>{4, 0, 2}}) {
    for (int step = 0; step < 3; ++step) {
      SCOPED_TRACE(SeedTrace(++seed) + " batch " +
                   std::to_string(slots.size()));
      Inputs inputs(seed);
      const int batch = static_cast<int>(slots.size());
      SublayerData expected = RandomSublayer(inputs, dims, 5);
      const std::vector<int64_t> all_positions = {M - 1, M, M + 1, 3 * M + 5,
                                                  0};
      std::vector<int64_t> positions(batch);
      for (int b = 0; b < batch; ++b)
        positions[b] = all_positions[(b + step) % 5];
      const int value_stride = H * dv + 1;
      const std::vector<int32_t> codes = inputs.Ints(batch * H, 0, S - 1);
      const std::vector<float> values = inputs.Floats(batch * value_stride);
      DeviceSublayer device(expected);
      DeviceArray<int32_t> device_slots(
          std::vector<int32_t>(slots.begin(), slots.end()));
      DeviceArray<int64_t> device_positions(positions);
      DeviceArray<int32_t> device_codes(codes);
      DeviceArray<float> device_values(values);
      TVQ_ASSERT_ARRAYS(device.ok(), device_slots.ok(), device_positions.ok(),
                        device_codes.ok(), device_values.ok());
      TVQ_ASSERT_LAUNCH(
          UpdateStateBatch(dims, device.state(), device_slots.get(),
                           device_positions.get(), batch, device_codes.get(),
                           device_values.get(), value_stride, nullptr));
      for (int b = 0; b < batch; ++b) {
        for (int h = 0; h < H; ++h) {
          const int64_t slot_head = static_cast<int64_t>(slots[b]) * H + h;
          cpu::AbsorbToken(M, dv, expected.counts.data() + slot_head * S,
                           expected.means.data() + slot_head * S * dv,
                           expected.window_codes.data() + slot_head * M,
                           expected.window_values.data() + slot_head * M * dv,
                           positions[b], codes[b * H + h],
                           values.data() + b * value_stride + h * dv);
        }
      }
      ExpectIdentical(device.counts.Read(), expected.counts, "counts");
      ExpectIdentical(device.means.Read(), expected.means, "means");
      ExpectIdentical(device.window_codes.Read(), expected.window_codes,
                      "window codes");
      ExpectIdentical(device.window_values.Read(), expected.window_values,
                      "window values");
    }
  }
}

}  // namespace
}  // namespace tvq::kernels::cuda::testing
