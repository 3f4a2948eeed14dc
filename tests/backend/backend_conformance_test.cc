// The backend conformance suite: every Backend op, written once as a TEST_P
// over (backend, dtype) and instantiated for every backend this build has:
// the CPU always, CUDA when the build has it (each case skips, naming the
// CUDA error, without a usable GPU), and the real CudaBackend on the kernel
// emulator (backend_conformance_emulated_test: the kernel sources compiled
// for tests/kernels/cuda_emulator, the CUDA runtime and cuBLAS calls served
// by emulated_cuda_runtime.cc), which runs here.
//
// Each op is checked against a plain float64 reference computed here, on
// seeded inputs of awkward sizes (widths that are not multiples of a vector
// or warp, S not a power of two, row strides wider than the rows, window
// boundaries t = M-1, M, M+1, batch 1 and scattered slots). Weights, tables
// and state are rounded to the parameter's dtype before the reference sees
// them, so a tolerance covers only the arithmetic. A backend that does not
// Support(op, dtype) skips the numeric case, and must then refuse the dtype
// with the named Unimplemented error (UnsupportedDTypeIsRefusedByName).
//
// Backends other than the CPU are also compared with the CPU backend, with
// the tolerances of the former pairwise CudaBackend-vs-CpuBackend tests
// (…MatchCpu, moved here unchanged in meaning and tolerance).
//
// Tolerances (|actual - expected| <= atol + rtol * |expected| unless said):
//   F32  elementwise ops (Embed, Silu, Multiply): 1e-6 / 1e-6 — one or two
//        float roundings of values of order 1.
//   F32  RmsNorm, HeadRmsNorm: 1e-6 / 1e-5 — a float32 sum of squares over
//        the row feeds a square root.
//   F32  LogSoftmax: 2e-6 / 1e-6 — the float32 maximum and log-partition are
//        subtracted from values of order log(cols).
//   F32  Gemm: 1e-5 relative to 1 + |expected| — float32 dot products of
//        length 70 of values in [-1, 1].
//   F32  Block/DecodeAttention: 1e-5 / 1e-5 — float32 scores, exponentials
//        and weighted sums over M + n + S entries.
//   F32  UpdateState(Batch): codes, counts and window values exact (copies
//        and integer counts); means 1e-6 / 1e-6 (one float32 running-mean
//        step per evicted token).
//   BF16 (no backend supports it yet; the numbers are the budget a bf16
//        backend will be held to): 8e-3 relative — bf16 keeps 8 bits of
//        mantissa (2^-8 = 3.9e-3 per rounding) and an op may round its
//        activations once more; attention 2e-2 (scores are exponentiated).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "server/backend/backend.h"
#include "server/backend/cpu/cpu_backend.h"
#include "server/backend/tensor.h"
#ifdef TVQ_WITH_CUDA
#include "server/backend/cuda/cuda_backend.h"
#endif

namespace tvq::runtime {
namespace {

using Factory = std::function<absl::StatusOr<std::unique_ptr<Backend>>()>;

struct BackendCase {
  std::string name;  // test-name suffix, e.g. "Cpu_F32"
  Factory create;
  DType dtype;  // of weights, tables and state
  bool is_cpu;
};

std::ostream& operator<<(std::ostream& out, const BackendCase& param) {
  return out << param.name;
}

// Tolerances per dtype (see the file comment for the reasons).
struct Tolerances {
  double elementwise_atol, elementwise_rtol;
  double norm_atol, norm_rtol;
  double softmax_atol, softmax_rtol;
  double gemm_relative;
  double attention_atol, attention_rtol;
  double mean_atol, mean_rtol;
};

Tolerances TolerancesFor(DType dtype) {
  if (dtype == DType::kF32) {
    return {1e-6, 1e-6, 1e-6, 1e-5, 2e-6, 1e-6, 1e-5, 1e-5, 1e-5, 1e-6, 1e-6};
  }
  return {8e-3, 8e-3, 8e-3, 8e-3, 8e-3, 8e-3, 8e-3, 2e-2, 2e-2, 8e-3, 8e-3};
}

// ------------------------------------------------------------ dtypes

uint16_t FloatToBFloat16(float value) {  // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
float BFloat16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

// `values` rounded to what `dtype` can hold (in place).
void RoundTo(DType dtype, std::vector<float>& values) {
  if (dtype != DType::kBF16) return;
  for (float& value : values) value = BFloat16ToFloat(FloatToBFloat16(value));
}

// The bytes of `values` stored as `dtype` (F32 or BF16).
std::vector<unsigned char> Encode(DType dtype,
                                  const std::vector<float>& values) {
  std::vector<unsigned char> bytes(values.size() * DTypeSize(dtype));
  if (dtype == DType::kBF16) {
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t bits = FloatToBFloat16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
  } else if (!values.empty()) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
  }
  return bytes;
}

// ------------------------------------------------------------ comparisons

// Every element within atol + rtol * |expected|; reports the worst one.
// NaN anywhere it is not expected fails.
void ExpectClose(const std::vector<float>& actual,
                 const std::vector<double>& expected, double atol, double rtol,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst = 0;
  size_t worst_index = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double error = std::abs(static_cast<double>(actual[i]) - expected[i]);
    const double ratio = std::isnan(error)
                             ? std::numeric_limits<double>::infinity()
                             : error / (atol + rtol * std::abs(expected[i]));
    if (ratio > worst) {
      worst = ratio;
      worst_index = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": worst element " << worst_index << " is "
                        << actual[worst_index] << ", expected "
                        << expected[worst_index] << " (atol " << atol
                        << ", rtol " << rtol << ")";
}

// |actual - expected| / (1 + |expected|) <= tolerance everywhere (the metric
// of the former CudaBackend-vs-CpuBackend tests).
void ExpectCloseRelativeToOne(const std::vector<float>& actual,
                              const std::vector<float>& expected,
                              double tolerance, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double worst = 0;
  size_t worst_index = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double error =
        std::abs(static_cast<double>(actual[i]) - expected[i]) /
        (1.0 + std::abs(static_cast<double>(expected[i])));
    if (!(error <= worst)) {
      worst = error;
      worst_index = i;
    }
  }
  EXPECT_LE(worst, tolerance)
      << what << ": element " << worst_index << " is " << actual[worst_index]
      << ", expected " << expected[worst_index];
}

std::vector<double> Widen(const std::vector<float>& values) {
  return std::vector<double>(values.begin(), values.end());
}

// ------------------------------------------------------------ the fixture

class BackendConformanceTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> backend = GetParam().create();
    if (!backend.ok()) {
      GTEST_SKIP() << GetParam().name << " unavailable: " << backend.status();
    }
    backend_ = std::move(*backend);
  }

  DType dtype() const { return GetParam().dtype; }
  const Tolerances& tolerances() const { return tolerances_; }
  Backend& backend() { return *backend_; }
  bool is_cpu() const { return GetParam().is_cpu; }

  // True (and the test should return) when the backend does not run `op`
  // at this dtype: the numeric case does not apply.
  bool SkipUnlessSupported(Op op) {
    if (backend_->Supports(op, dtype())) return false;
    skipped_reason_ = std::string(backend_->Name()) + "::" + OpName(op) +
                      " does not support " + DTypeName(dtype());
    return true;
  }

  std::vector<float> Floats(size_t n, float low = -1, float high = 1) {
    std::uniform_real_distribution<float> distribution(low, high);
    std::vector<float> values(n);
    for (float& value : values) value = distribution(engine_);
    return values;
  }
  int Int(int low, int high) {  // inclusive
    return std::uniform_int_distribution<int>(low, high)(engine_);
  }

  // A copy of `host` in the memory of `on` (CPU: plain memory).
  template <typename T>
  static DeviceBuffer On(Backend& on, const std::vector<T>& host) {
    DeviceBuffer buffer =
        on.Allocate(sizeof(T) * std::max<size_t>(host.size(), 1)).value();
    EXPECT_TRUE(
        on.CopyToDevice(buffer.get(), host.data(), sizeof(T) * host.size())
            .ok());
    return buffer;
  }
  template <typename T>
  static std::vector<T> Read(Backend& on, const DeviceBuffer& buffer,
                             size_t count) {
    std::vector<T> host(count);
    const absl::Status status =
        on.CopyToHost(host.data(), buffer.get(), sizeof(T) * count);
    EXPECT_TRUE(status.ok()) << status;
    return host;
  }
  // Weights `host` ([rows, cols], or [cols] when rows is 0) stored as
  // `dtype` in `on`'s memory; `storage` keeps them alive.
  static TensorView Weights(Backend& on, DType dtype,
                            const std::vector<float>& host, int64_t rows,
                            int64_t cols, std::vector<unsigned char>& bytes,
                            DeviceBuffer& storage) {
    bytes = Encode(dtype, host);
    const std::vector<int64_t> shape = rows > 0
                                           ? std::vector<int64_t>{rows, cols}
                                           : std::vector<int64_t>{cols};
    const TensorView view = TensorView::Of(bytes.data(), dtype, shape);
    absl::StatusOr<TensorView> uploaded = on.UploadWeights(view, &storage);
    EXPECT_TRUE(uploaded.ok()) << uploaded.status();
    return uploaded.ok() ? *uploaded : TensorView();
  }

  std::mt19937 engine_{2024};
  std::unique_ptr<Backend> backend_;
  CpuBackend cpu_{1};  // the reference backend of the …MatchCpu assertions
  Tolerances tolerances_ = TolerancesFor(GetParam().dtype);
  std::string skipped_reason_;
};

#define TVQ_SKIP_UNLESS_SUPPORTED(op) \
  if (SkipUnlessSupported(op)) GTEST_SKIP() << skipped_reason_

// ------------------------------------------------------------ GEMM

std::vector<double> ReferenceGemm(bool transpose_a, bool transpose_b, int m,
                                  int n, int k, double alpha,
                                  const std::vector<float>& a, int lda,
                                  const std::vector<float>& b, int ldb,
                                  double beta, const std::vector<float>& c,
                                  int ldc) {
  std::vector<double> out(c.begin(), c.end());
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double sum = 0;
      for (int p = 0; p < k; ++p) {
        const double x = transpose_a ? a[static_cast<size_t>(p) * lda + i]
                                     : a[static_cast<size_t>(i) * lda + p];
        const double y = transpose_b ? b[static_cast<size_t>(j) * ldb + p]
                                     : b[static_cast<size_t>(p) * ldb + j];
        sum += x * y;
      }
      double& element = out[static_cast<size_t>(i) * ldc + j];
      element = alpha * sum + beta * element;
    }
  }
  return out;
}

TEST_P(BackendConformanceTest, GemmEveryLayout) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kGemm);
  for (const bool transpose_a : {false, true}) {
    for (const bool transpose_b : {false, true}) {
      for (const bool invariant : {false, true}) {
        const int m = 37, n = 45, k = 70;
        const int lda = (transpose_a ? m : k) + 3,
                  ldb = (transpose_b ? k : n) + 2, ldc = n + 5;
        const int a_rows = transpose_a ? k : m, b_rows = transpose_b ? n : k;
        const std::vector<float> a = Floats(static_cast<size_t>(a_rows) * lda);
        std::vector<float> b = Floats(static_cast<size_t>(b_rows) * ldb);
        RoundTo(dtype(), b);
        const std::vector<float> c = Floats(static_cast<size_t>(m) * ldc);
        const std::string what =
            std::string("gemm") + (transpose_a ? " a^T" : "") +
            (transpose_b ? " b^T" : "") + (invariant ? " invariant" : "");
        auto run = [&](Backend& on, DType b_dtype) {
          DeviceBuffer da = On(on, a), dc = On(on, c);
          const std::vector<unsigned char> b_bytes = Encode(b_dtype, b);
          DeviceBuffer db = On(on, b_bytes);
          const int64_t b_shape[2] = {b_rows, transpose_b ? k : n};
          GemmArgs args{.transpose_a = transpose_a,
                        .transpose_b = transpose_b,
                        .alpha = 1,
                        .a = F32(da.as<const float>(),
                                 {a_rows, transpose_a ? m : k}, lda),
                        .b = TensorView::Of(db.get(), b_dtype, b_shape, ldb),
                        .beta = 0.5f,
                        .c = F32(dc.as<float>(), {m, n}, ldc),
                        .batch_invariant = invariant};
          const absl::Status status = on.Gemm(args);
          EXPECT_TRUE(status.ok()) << status;
          return Read<float>(on, dc, c.size());
        };
        const std::vector<float> actual = run(backend(), dtype());
        // Padding columns of c (j >= n) must be left alone.
        const std::vector<double> expected =
            ReferenceGemm(transpose_a, transpose_b, m, n, k, 1.0, a, lda, b,
                          ldb, 0.5, c, ldc);
        ExpectCloseRelativeToOne(
            actual, std::vector<float>(expected.begin(), expected.end()),
            tolerances().gemm_relative, what + " vs float64");
        if (!is_cpu() && dtype() == DType::kF32) {
          ExpectCloseRelativeToOne(actual, run(cpu_, DType::kF32), 1e-5,
                                   what + " vs CpuBackend");
        }
        if (invariant && !transpose_a) {
          // Batch invariance: each row alone, bit for bit the row of the
          // whole batch (a decode sequence never depends on its peers).
          for (const int row : {0, 17, m - 1}) {
            DeviceBuffer da_row =
                On(backend(), std::vector<float>(a.begin() + row * lda,
                                                 a.begin() + (row + 1) * lda));
            DeviceBuffer dc_row =
                On(backend(), std::vector<float>(c.begin() + row * ldc,
                                                 c.begin() + (row + 1) * ldc));
            const std::vector<unsigned char> b_bytes = Encode(dtype(), b);
            DeviceBuffer db = On(backend(), b_bytes);
            const int64_t b_shape[2] = {b_rows, transpose_b ? k : n};
            const absl::Status status = backend().Gemm(
                {.transpose_b = transpose_b,
                 .a = F32(da_row.as<const float>(), {1, k}, lda),
                 .b = TensorView::Of(db.get(), dtype(), b_shape, ldb),
                 .beta = 0.5f,
                 .c = F32(dc_row.as<float>(), {1, n}, ldc),
                 .batch_invariant = true});
            ASSERT_TRUE(status.ok()) << status;
            const std::vector<float> alone =
                Read<float>(backend(), dc_row, ldc);
            EXPECT_EQ(0, std::memcmp(alone.data(), actual.data() + row * ldc,
                                     sizeof(float) * n))
                << what << ": row " << row << " alone differs from the batch";
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------ row ops

TEST_P(BackendConformanceTest, EmbedWithPositions) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kEmbed);
  const int rows = 5, d_model = 70, vocab = 41;
  const double pe_lam = 10000.0;
  const float position_scale = 0.5f;
  std::vector<float> embeddings = Floats(vocab * d_model);
  RoundTo(dtype(), embeddings);
  std::vector<unsigned char> bytes;
  DeviceBuffer storage;
  const TensorView table =
      Weights(backend(), dtype(), embeddings, vocab, d_model, bytes, storage);
  DeviceBuffer x = backend().Allocate(sizeof(float) * rows * d_model).value();
  // Two calls with same-sized but different index arrays: a device copy of
  // the indices must follow.
  for (int call = 0; call < 2; ++call) {
    const std::vector<int32_t> tokens =
        call == 0 ? std::vector<int32_t>{1, 5, 7, 40, 0}
                  : std::vector<int32_t>{2, 5, 9, 11, 3};
    const std::vector<int64_t> positions = {0, 7, 8, 9, 100000 + call};
    for (const bool add_positions : {false, true}) {
      const absl::Status status =
          backend().Embed(table, tokens.data(), positions.data(), rows,
                          add_positions, position_scale, pe_lam, x.as<float>());
      ASSERT_TRUE(status.ok()) << status;
      std::vector<double> expected(rows * d_model);
      for (int i = 0; i < rows; ++i) {
        for (int c = 0; c < d_model; ++c) {
          expected[i * d_model + c] = embeddings[tokens[i] * d_model + c];
        }
        if (!add_positions) continue;
        const int half = d_model / 2;
        for (int c = 0; c < half; ++c) {
          const double angle = static_cast<double>(positions[i]) /
                               std::pow(pe_lam, 2.0 * c / d_model);
          expected[i * d_model + c] += position_scale * std::sin(angle);
          expected[i * d_model + half + c] += position_scale * std::cos(angle);
        }
      }
      ExpectClose(Read<float>(backend(), x, rows * d_model), expected,
                  tolerances().elementwise_atol, tolerances().elementwise_rtol,
                  "Embed call " + std::to_string(call) +
                      (add_positions ? " with positions" : ""));
    }
  }
}

TEST_P(BackendConformanceTest, RmsNormWithAndWithoutGainAndBias) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kRmsNorm);
  const int rows = 5, width = 70, x_stride = 73, y_stride = 75;
  const std::vector<float> x = Floats(rows * x_stride, -2, 2);
  std::vector<float> gain = Floats(width, 0.5, 1.5), bias = Floats(width);
  RoundTo(dtype(), gain);
  RoundTo(dtype(), bias);
  std::vector<unsigned char> gain_bytes, bias_bytes;
  DeviceBuffer gain_storage, bias_storage;
  const TensorView gain_view =
      Weights(backend(), dtype(), gain, 0, width, gain_bytes, gain_storage);
  const TensorView bias_view =
      Weights(backend(), dtype(), bias, 0, width, bias_bytes, bias_storage);
  for (const bool with_gain : {false, true}) {
    for (const bool with_bias : {false, true}) {
      DeviceBuffer dx = On(backend(), x);
      DeviceBuffer dy =
          backend().Allocate(sizeof(float) * rows * y_stride).value();
      const absl::Status status = backend().RmsNorm(
          rows, width, dx.as<float>(), x_stride,
          with_gain ? gain_view : TensorView(),
          with_bias ? bias_view : TensorView(), dy.as<float>(), y_stride);
      ASSERT_TRUE(status.ok()) << status;
      const std::vector<float> y = Read<float>(backend(), dy, rows * y_stride);
      std::vector<float> actual;
      std::vector<double> expected;
      for (int i = 0; i < rows; ++i) {
        double sum_squares = 0;
        for (int c = 0; c < width; ++c) {
          sum_squares +=
              static_cast<double>(x[i * x_stride + c]) * x[i * x_stride + c];
        }
        const double inverse = 1.0 / std::sqrt(1e-6 + sum_squares / width);
        for (int c = 0; c < width; ++c) {
          actual.push_back(y[i * y_stride + c]);
          expected.push_back(x[i * x_stride + c] * inverse *
                                 (with_gain ? gain[c] : 1.0) +
                             (with_bias ? bias[c] : 0.0));
        }
      }
      ExpectClose(actual, expected, tolerances().norm_atol,
                  tolerances().norm_rtol,
                  std::string("RmsNorm") + (with_gain ? " gain" : "") +
                      (with_bias ? " bias" : ""));
    }
  }
}

TEST_P(BackendConformanceTest, HeadRmsNormInPlace) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kHeadRmsNorm);
  const int rows = 7, heads = 3, width = 33, stride = heads * width + 5;
  const float scale = 0.25f;
  const std::vector<float> q = Floats(rows * stride, -3, 3);
  DeviceBuffer dq = On(backend(), q);
  const absl::Status status =
      backend().HeadRmsNorm(rows, heads, width, dq.as<float>(), stride, scale);
  ASSERT_TRUE(status.ok()) << status;
  const std::vector<float> out = Read<float>(backend(), dq, q.size());
  std::vector<double> expected = Widen(q);  // padding untouched
  for (int i = 0; i < rows; ++i) {
    for (int h = 0; h < heads; ++h) {
      const float* row = q.data() + i * stride + h * width;
      double sum_squares = 0;
      for (int c = 0; c < width; ++c) sum_squares += double{row[c]} * row[c];
      const double inverse = scale / std::sqrt(1e-6 + sum_squares / width);
      for (int c = 0; c < width; ++c) {
        expected[i * stride + h * width + c] = row[c] * inverse;
      }
    }
  }
  ExpectClose(out, expected, tolerances().norm_atol, tolerances().norm_rtol,
              "HeadRmsNorm");
}

TEST_P(BackendConformanceTest, SiluAndMultiply) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kSilu);
  const int rows = 6, cols = 61, stride = 67, gate_stride = 64;
  // Includes values whose exp(-x) overflows (silu -> -0).
  std::vector<float> x = Floats(rows * stride, -8, 8);
  x[3] = -100.0f;
  x[4] = 100.0f;
  const std::vector<float> gate = Floats(rows * gate_stride, -2, 2);
  DeviceBuffer dx = On(backend(), x), dgate = On(backend(), gate);
  ASSERT_TRUE(backend().Silu(rows, cols, dx.as<float>(), stride).ok());
  const std::vector<float> silu = Read<float>(backend(), dx, x.size());
  std::vector<double> expected = Widen(x);
  for (int i = 0; i < rows; ++i) {
    for (int c = 0; c < cols; ++c) {
      const double value = x[i * stride + c];
      expected[i * stride + c] = value / (1.0 + std::exp(-value));
    }
  }
  ExpectClose(silu, expected, tolerances().elementwise_atol,
              tolerances().elementwise_rtol, "Silu");
  ASSERT_TRUE(backend()
                  .Multiply(rows, cols - 10, dx.as<float>(), stride,
                            dgate.as<float>(), gate_stride)
                  .ok());
  const std::vector<float> product = Read<float>(backend(), dx, x.size());
  expected = Widen(silu);
  for (int i = 0; i < rows; ++i) {
    for (int c = 0; c < cols - 10; ++c) {
      expected[i * stride + c] =
          double{silu[i * stride + c]} * gate[i * gate_stride + c];
    }
  }
  ExpectClose(product, expected, tolerances().elementwise_atol,
              tolerances().elementwise_rtol, "Multiply");
}

TEST_P(BackendConformanceTest, LogSoftmaxWithAndWithoutBias) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kLogSoftmax);
  const int rows = 4, cols = 1037;
  const float scale = 0.7f;
  const std::vector<float> x = Floats(rows * cols, -6, 6);
  std::vector<float> bias = Floats(cols, -2, 2);
  RoundTo(dtype(), bias);
  std::vector<unsigned char> bias_bytes;
  DeviceBuffer bias_storage;
  const TensorView bias_view =
      Weights(backend(), dtype(), bias, 0, cols, bias_bytes, bias_storage);
  for (const bool with_bias : {false, true}) {
    DeviceBuffer dx = On(backend(), x);
    const absl::Status status =
        backend().LogSoftmax(rows, cols, with_bias ? bias_view : TensorView(),
                             scale, dx.as<float>());
    ASSERT_TRUE(status.ok()) << status;
    std::vector<double> expected(x.size());
    for (int i = 0; i < rows; ++i) {
      double maximum = -INFINITY;
      for (int c = 0; c < cols; ++c) {
        expected[i * cols + c] =
            (x[i * cols + c] + (with_bias ? bias[c] : 0.0)) * double{scale};
        maximum = std::max(maximum, expected[i * cols + c]);
      }
      double sum = 0;
      for (int c = 0; c < cols; ++c)
        sum += std::exp(expected[i * cols + c] - maximum);
      for (int c = 0; c < cols; ++c) {
        expected[i * cols + c] -= maximum + std::log(sum);
      }
    }
    ExpectClose(Read<float>(backend(), dx, x.size()), expected,
                tolerances().softmax_atol, tolerances().softmax_rtol,
                with_bias ? "LogSoftmax with bias" : "LogSoftmax");
  }
}

// The former CudaBackendTest.RowOperationsMatchCpu, unchanged: the chain
// embed, RmsNorm, HeadRmsNorm, Silu, Multiply, LogSoftmax against the CPU.
TEST_P(BackendConformanceTest, RowOperationChainMatchesCpu) {
  if (is_cpu()) GTEST_SKIP() << "the CPU backend is the reference";
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kEmbed);
  const int rows = 5, d_model = 70, vocab = 41;
  const std::vector<float> embeddings = Floats(vocab * d_model);
  const std::vector<float> gain = Floats(d_model, 0.5, 1.5),
                           bias = Floats(d_model);
  const std::vector<float> gate = Floats(rows * d_model, -2, 2);
  std::vector<float> results[2];
  Backend* backends[2] = {&cpu_, backend_.get()};
  for (int which = 0; which < 2; ++which) {
    Backend& on = *backends[which];
    std::vector<unsigned char> table_bytes, gain_bytes, bias_bytes;
    DeviceBuffer table_storage, gain_storage, bias_storage;
    const TensorView table = Weights(on, DType::kF32, embeddings, vocab,
                                     d_model, table_bytes, table_storage);
    const TensorView g =
        Weights(on, DType::kF32, gain, 0, d_model, gain_bytes, gain_storage);
    const TensorView bi =
        Weights(on, DType::kF32, bias, 0, d_model, bias_bytes, bias_storage);
    DeviceBuffer gt = On(on, gate);
    DeviceBuffer x = on.Allocate(sizeof(float) * rows * d_model).value();
    DeviceBuffer y = on.Allocate(sizeof(float) * rows * d_model).value();
    for (int call = 0; call < 2; ++call) {
      const std::vector<int32_t> tokens =
          call == 0 ? std::vector<int32_t>{1, 5, 7, 40, 0}
                    : std::vector<int32_t>{2, 5, 9, 11, 3};
      const std::vector<int64_t> positions = {0, 7, 8, 9, 100000 + call};
      ASSERT_TRUE(on.Embed(table, tokens.data(), positions.data(), rows, true,
                           0.5f, 10000.0, x.as<float>())
                      .ok());
    }
    ASSERT_TRUE(on.RmsNorm(rows, d_model, x.as<float>(), d_model, g, bi,
                           y.as<float>(), d_model)
                    .ok());
    ASSERT_TRUE(
        on.HeadRmsNorm(rows, 5, 14, y.as<float>(), d_model, 0.25f).ok());
    ASSERT_TRUE(on.Silu(rows, 60, y.as<float>(), d_model).ok());
    ASSERT_TRUE(
        on.Multiply(rows, 50, y.as<float>(), d_model, gt.as<float>(), d_model)
            .ok());
    ASSERT_TRUE(on.LogSoftmax(rows, d_model, bi, 0.7f, y.as<float>()).ok());
    results[which] = Read<float>(on, y, rows * d_model);
  }
  ExpectCloseRelativeToOne(results[1], results[0], 2e-5,
                           "embed, norms, silu, multiply, log-softmax");
}

// ------------------------------------------------------------ attention

// One sublayer's tables and every slot's state on the host, rounded to the
// case's dtype.
struct HostSublayer {
  AttentionShape shape;
  int slots = 0;
  std::vector<float> codebook, sq_norm, relative, u, v;
  std::vector<float> counts, means, window_values;
  std::vector<int32_t> window_codes;
};

// Tables and state in one backend's memory (F32 storage; a bf16 backend
// would get encoded bytes here).
struct DeviceSublayer {
  DeviceBuffer codebook, sq_norm, relative, u, v;
  DeviceBuffer counts, means, window_codes, window_values;
  DType dtype = DType::kF32;
  int slots = 0;
  AttentionTables tables() const {
    AttentionTables tables;
    tables.codebook = codebook.as<float>();
    tables.codebook_sq_norm = sq_norm.as<float>();
    tables.relative = relative.as<float>();
    tables.u = u.as<float>();
    tables.v = v.as<float>();
    tables.dtype = dtype;
    return tables;
  }
  SublayerState state() const {
    SublayerState state;
    state.counts = counts.as<float>();
    state.means = means.as<float>();
    state.window_codes = window_codes.as<int32_t>();
    state.window_values = window_values.as<float>();
    state.dtype = dtype;
    state.num_slots = slots;
    return state;
  }
};

// Distance, from a query at `position`, of the token in window slot m:
// M - ((m - position) mod M), in [1, M].
int WindowDistance(int m, int64_t position, int M) {
  int64_t offset = (static_cast<int64_t>(m) - position) % M;
  if (offset < 0) offset += M;
  return M - static_cast<int>(offset);
}

// float64 attention of n consecutive queries (positions first_position..)
// of `slot`, spec §2-3: each query attends to the window tokens (code score
// plus the relative score of its distance; beyond M, a "bubble" key kept
// without the position term with agg_cache and dropped without), to the
// block's keys up to itself, and with agg_cache to every code with a
// nonzero count (score + log count, value = mean). out [n, H * d_v].
std::vector<double> ReferenceAttention(const HostSublayer& data, int slot,
                                       int64_t first_position, int n,
                                       const std::vector<float>& q,
                                       int q_stride,
                                       const std::vector<int32_t>& codes,
                                       const std::vector<float>& values,
                                       int value_offset, int value_stride) {
  const AttentionShape& shape = data.shape;
  const int H = shape.n_head, S = shape.n_code, M = shape.mem_len,
            dk = shape.d_k, dv = shape.d_v;
  std::vector<double> out(static_cast<size_t>(n) * H * dv, 0.0);
  for (int h = 0; h < H; ++h) {
    const int64_t slot_head = static_cast<int64_t>(slot) * H + h;
    const float* codebook = data.codebook.data() + h * S * dk;
    const float* relative = data.relative.data() + h * (M + 1) * dk;
    for (int i = 0; i < n; ++i) {
      const float* query =
          q.data() + static_cast<size_t>(i) * q_stride + h * dk;
      std::vector<double> code_scores(S), relative_scores(M + 1);
      for (int s = 0; s < S; ++s) {
        double sum = 0;
        for (int c = 0; c < dk; ++c) {
          sum += (double{query[c]} + data.u[h * dk + c]) * codebook[s * dk + c];
        }
        code_scores[s] = sum;
      }
      for (int d = 0; d <= M; ++d) {
        double sum = 0;
        for (int c = 0; c < dk; ++c) {
          sum += (double{query[c]} + data.v[h * dk + c]) * relative[d * dk + c];
        }
        relative_scores[d] = sum;
      }
      // (score, value row) of every attended key.
      std::vector<std::pair<double, const float*>> keys;
      for (int m = 0; m < M; ++m) {
        const int32_t code = data.window_codes[slot_head * M + m];
        const int distance = WindowDistance(m, first_position, M) + i;
        if (code < 0 || (distance > M && !shape.agg_cache)) continue;
        keys.push_back({code_scores[code] +
                            (distance <= M ? relative_scores[distance] : 0.0),
                        data.window_values.data() + (slot_head * M + m) * dv});
      }
      for (int j = 0; j <= i; ++j) {
        const int distance = i - j;
        if (distance > M && !shape.agg_cache) continue;
        keys.push_back({code_scores[codes[static_cast<size_t>(j) * H + h]] +
                            (distance <= M ? relative_scores[distance] : 0.0),
                        values.data() + value_offset +
                            static_cast<size_t>(j) * value_stride + h * dv});
      }
      if (shape.agg_cache) {
        for (int s = 0; s < S; ++s) {
          const float count = data.counts[slot_head * S + s];
          if (count <= 0) continue;
          keys.push_back({code_scores[s] + std::log(double{count}),
                          data.means.data() + (slot_head * S + s) * dv});
        }
      }
      double maximum = -INFINITY;
      for (const auto& key : keys) maximum = std::max(maximum, key.first);
      double total = 0;
      for (const auto& key : keys) total += std::exp(key.first - maximum);
      double* row = out.data() + static_cast<size_t>(i) * H * dv + h * dv;
      for (const auto& key : keys) {
        const double weight = std::exp(key.first - maximum) / total;
        for (int c = 0; c < dv; ++c) row[c] += weight * key.second[c];
      }
    }
  }
  return out;
}

// float64 state update of spec §3: token p (code, value) evicts the token
// in ring slot p mod M into count/mean (m' = m + (v - m) / n'), then takes
// the slot.
void ReferenceAbsorb(HostSublayer& data, std::vector<double>& means, int slot,
                     int64_t position, const int32_t* codes,
                     const float* value_row) {
  const int H = data.shape.n_head, S = data.shape.n_code,
            M = data.shape.mem_len, dv = data.shape.d_v;
  for (int h = 0; h < H; ++h) {
    const int64_t slot_head = static_cast<int64_t>(slot) * H + h;
    const int ring = static_cast<int>(position % M);
    float* window_value =
        data.window_values.data() + (slot_head * M + ring) * dv;
    const int32_t evicted = data.window_codes[slot_head * M + ring];
    if (evicted >= 0) {
      float& count = data.counts[slot_head * S + evicted];
      count += 1.0f;
      double* mean = means.data() + (slot_head * S + evicted) * dv;
      for (int c = 0; c < dv; ++c)
        mean[c] += (window_value[c] - mean[c]) / count;
    }
    data.window_codes[slot_head * M + ring] = codes[h];
    std::copy(value_row + h * dv, value_row + (h + 1) * dv, window_value);
  }
}

class AttentionConformanceTest : public BackendConformanceTest {
 protected:
  // Random tables and state: counts are integers (about 40% zero), window
  // slots about 20% empty.
  HostSublayer RandomSublayer(const AttentionShape& shape, int slots) {
    HostSublayer data;
    data.shape = shape;
    data.slots = slots;
    const int H = shape.n_head, S = shape.n_code, M = shape.mem_len,
              dk = shape.d_k, dv = shape.d_v;
    data.codebook = Floats(H * S * dk, -0.5, 0.5);
    RoundTo(dtype(), data.codebook);
    data.sq_norm.resize(H * S);
    for (int hs = 0; hs < H * S; ++hs) {
      float sum = 0;
      for (int c = 0; c < dk; ++c) {
        sum += data.codebook[hs * dk + c] * data.codebook[hs * dk + c];
      }
      data.sq_norm[hs] = sum;
    }
    RoundTo(dtype(), data.sq_norm);
    data.relative = Floats(H * (M + 1) * dk, -0.5, 0.5);
    data.u = Floats(H * dk, -0.3, 0.3);
    data.v = Floats(H * dk, -0.3, 0.3);
    RoundTo(dtype(), data.relative);
    RoundTo(dtype(), data.u);
    RoundTo(dtype(), data.v);
    data.counts.resize(slots * H * S);
    for (float& count : data.counts) {
      count = Int(0, 9) < 4 ? 0.0f : static_cast<float>(Int(1, 50));
    }
    data.means = Floats(slots * H * S * dv);
    RoundTo(dtype(), data.means);
    data.window_codes.resize(slots * H * M);
    for (int32_t& code : data.window_codes) {
      code = Int(0, 9) < 2 ? -1 : Int(0, S - 1);
    }
    data.window_values = Floats(slots * H * M * dv);
    RoundTo(dtype(), data.window_values);
    return data;
  }
  DeviceSublayer Upload(Backend& on, const HostSublayer& data) {
    DeviceSublayer s{On(on, data.codebook),
                     On(on, data.sq_norm),
                     On(on, data.relative),
                     On(on, data.u),
                     On(on, data.v),
                     On(on, data.counts),
                     On(on, data.means),
                     On(on, data.window_codes),
                     On(on, data.window_values)};
    s.dtype = DType::kF32;  // storage; see DeviceSublayer
    s.slots = data.slots;
    return s;
  }
  void ReadState(Backend& on, const DeviceSublayer& s, HostSublayer& data) {
    data.counts = Read<float>(on, s.counts, data.counts.size());
    data.means = Read<float>(on, s.means, data.means.size());
    data.window_codes =
        Read<int32_t>(on, s.window_codes, data.window_codes.size());
    data.window_values =
        Read<float>(on, s.window_values, data.window_values.size());
  }
};

std::string ShapeName(const AttentionShape& d) {
  return "H " + std::to_string(d.n_head) + " S " + std::to_string(d.n_code) +
         " M " + std::to_string(d.mem_len) + " dk " + std::to_string(d.d_k) +
         " dv " + std::to_string(d.d_v) + (d.agg_cache ? " agg" : " no-agg");
}

TEST_P(AttentionConformanceTest, VqAssignPicksTheNearestCode) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kVqAssign);
  const AttentionShape shape{.n_head = 3,
                             .n_code = 13,
                             .mem_len = 7,
                             .d_k = 16,
                             .d_v = 20,
                             .agg_cache = true};
  const HostSublayer data = RandomSublayer(shape, 1);
  const int rows = 11, H = shape.n_head, S = shape.n_code, dk = shape.d_k;
  const int key_stride = H * dk + 9;
  const std::vector<float> keys = Floats(rows * key_stride, -0.6, 0.6);
  auto run = [&](Backend& on) {
    DeviceSublayer s = Upload(on, data);
    DeviceBuffer dkeys = On(on, keys);
    DeviceBuffer codes = on.Allocate(sizeof(int32_t) * rows * H).value();
    const absl::Status status =
        on.VqAssign(rows, shape, s.tables(), dkeys.as<float>(), key_stride,
                    codes.as<int32_t>());
    EXPECT_TRUE(status.ok()) << status;
    return Read<int32_t>(on, codes, rows * H);
  };
  const std::vector<int32_t> codes = run(backend());
  for (int i = 0; i < rows; ++i) {
    for (int h = 0; h < H; ++h) {
      // The chosen code's float64 distance is the smallest up to float32
      // rounding of the distances (1e-5 relative): near-ties may go either
      // way in float32.
      auto distance = [&](int s) {
        double sum = 0;
        for (int c = 0; c < dk; ++c) {
          const double diff = double{keys[i * key_stride + h * dk + c]} -
                              data.codebook[(h * S + s) * dk + c];
          sum += diff * diff;
        }
        return sum;
      };
      double best = INFINITY;
      for (int s = 0; s < S; ++s) best = std::min(best, distance(s));
      const int32_t code = codes[i * H + h];
      ASSERT_TRUE(code >= 0 && code < S) << "row " << i << " head " << h;
      EXPECT_LE(distance(code), best + 1e-5 * (1 + best))
          << "row " << i << " head " << h << " code " << code;
    }
  }
  if (!is_cpu() && dtype() == DType::kF32) {
    EXPECT_EQ(codes, run(cpu_)) << "VQ codes vs CpuBackend";
  }
}

TEST_P(AttentionConformanceTest, VqAssignBreaksTiesTowardTheLowestIndex) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kVqAssign);
  // 70 codes (two tiles of a 64-code kernel); codewords 5, 40 and 66 equal.
  const AttentionShape shape{.n_head = 1,
                             .n_code = 70,
                             .mem_len = 4,
                             .d_k = 8,
                             .d_v = 4,
                             .agg_cache = true};
  HostSublayer data = RandomSublayer(shape, 1);
  const int d_k = shape.d_k;
  std::copy_n(data.codebook.begin() + 5 * d_k, d_k,
              data.codebook.begin() + 40 * d_k);
  std::copy_n(data.codebook.begin() + 5 * d_k, d_k,
              data.codebook.begin() + 66 * d_k);
  for (int s = 0; s < shape.n_code; ++s) {
    float sum = 0;
    for (int c = 0; c < d_k; ++c) {
      sum += data.codebook[s * d_k + c] * data.codebook[s * d_k + c];
    }
    data.sq_norm[s] = sum;
  }
  // Key 0 is exactly codeword 5; against an all-zero codebook every
  // distance ties at 0.
  std::vector<float> keys(2 * d_k, 0.0f);
  std::copy_n(data.codebook.begin() + 5 * d_k, d_k, keys.begin());
  HostSublayer zeros = data;
  std::fill(zeros.codebook.begin(), zeros.codebook.end(), 0.0f);
  std::fill(zeros.sq_norm.begin(), zeros.sq_norm.end(), 0.0f);
  for (const HostSublayer* book : {&data, &zeros}) {
    DeviceSublayer s = Upload(backend(), *book);
    DeviceBuffer dkeys = On(backend(), keys);
    DeviceBuffer codes = On(backend(), std::vector<int32_t>(2, -7));
    ASSERT_TRUE(backend()
                    .VqAssign(2, shape, s.tables(), dkeys.as<float>(), d_k,
                              codes.as<int32_t>())
                    .ok());
    const std::vector<int32_t> actual = Read<int32_t>(backend(), codes, 2);
    EXPECT_EQ(actual[0], book == &zeros ? 0 : 5);
    if (book == &zeros) {
      EXPECT_EQ(actual[1], 0);
    }
  }
}

TEST_P(AttentionConformanceTest, BlockAttentionAtWindowBoundaries) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kBlockAttention);
  for (const AttentionShape& shape : {AttentionShape{1, 13, 7, 16, 20, true},
                                      AttentionShape{2, 13, 7, 16, 20, true},
                                      AttentionShape{2, 11, 8, 16, 12, false},
                                      AttentionShape{1, 5, 4, 33, 37, true}}) {
    const int H = shape.n_head, dk = shape.d_k, dv = shape.d_v,
              M = shape.mem_len;
    const HostSublayer data = RandomSublayer(shape, 3);
    const int slot = 2;
    for (const int64_t first_position : {int64_t{0}, int64_t{M - 1}, int64_t{M},
                                         int64_t{M + 1}, int64_t{30}}) {
      for (const int n : {1, 3, 2 * M + 3}) {
        const int q_stride = H * dk + 2, value_stride = H * dv + 5;
        const std::vector<float> q = Floats(n * q_stride, -2, 2);
        const std::vector<float> values = Floats(n * value_stride, -1, 1);
        std::vector<int32_t> codes(n * H);
        for (int32_t& code : codes) code = Int(0, shape.n_code - 1);
        auto run = [&](Backend& on) {
          DeviceSublayer s = Upload(on, data);
          DeviceBuffer dq = On(on, q), dvalues = On(on, values),
                       dcodes = On(on, codes);
          DeviceBuffer out = on.Allocate(sizeof(float) * n * H * dv).value();
          const absl::Status status = on.BlockAttention(
              shape, s.tables(), s.state(), slot, first_position, n,
              dq.as<float>(), q_stride, dcodes.as<int32_t>(),
              dvalues.as<float>(), value_stride, out.as<float>());
          EXPECT_TRUE(status.ok()) << status;
          return Read<float>(on, out, n * H * dv);
        };
        const std::string what =
            "BlockAttention " + ShapeName(shape) + " first_position " +
            std::to_string(first_position) + " n " + std::to_string(n);
        const std::vector<float> actual = run(backend());
        ExpectClose(
            actual,
            ReferenceAttention(data, slot, first_position, n, q, q_stride,
                               codes, values, 0, value_stride),
            tolerances().attention_atol, tolerances().attention_rtol, what);
        if (!is_cpu() && dtype() == DType::kF32) {
          ExpectCloseRelativeToOne(actual, run(cpu_), 1e-5,
                                   what + " vs CpuBackend");
        }
      }
    }
  }
}

TEST_P(AttentionConformanceTest, DecodeAttentionOfScatteredSlots) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kDecodeAttention);
  for (const AttentionShape& shape :
       {AttentionShape{1, 13, 7, 16, 36, true},
        AttentionShape{2, 50, 16, 16, 37, true},
        AttentionShape{3, 13, 7, 33, 36, false},
        AttentionShape{1, 129, 64, 16, 36, true}}) {
    const int H = shape.n_head, dk = shape.d_k, dv = shape.d_v,
              M = shape.mem_len;
    const HostSublayer data = RandomSublayer(shape, 5);
    struct Batch {
      std::vector<int> slots;
      std::vector<int64_t> positions;
    };
    for (const Batch& batch :
         {Batch{{3}, {M}}, Batch{{3, 0, 2}, {M - 1, M + 1, 30}},
          Batch{{4, 1, 0, 2, 3}, {0, M, 2 * M + 1, 5, 1000}}}) {
      const int b = static_cast<int>(batch.slots.size());
      const int q_stride = H * dk + 3, value_stride = H * (dk + 2 * dv) + 1;
      const std::vector<float> q = Floats(b * q_stride, -2, 2);
      const std::vector<float> values = Floats(b * value_stride, -1, 1);
      std::vector<int32_t> codes(b * H);
      for (int32_t& code : codes) code = Int(0, shape.n_code - 1);
      auto run = [&](Backend& on) {
        DeviceSublayer s = Upload(on, data);
        DeviceBuffer dq = On(on, q), dvalues = On(on, values),
                     dcodes = On(on, codes);
        DeviceBuffer out = on.Allocate(sizeof(float) * b * H * dv).value();
        const absl::Status status = on.DecodeAttention(
            shape, s.tables(), s.state(), batch.slots.data(),
            batch.positions.data(), b, dq.as<float>(), q_stride,
            dcodes.as<int32_t>(), dvalues.as<float>(), value_stride,
            out.as<float>());
        EXPECT_TRUE(status.ok()) << status;
        return Read<float>(on, out, b * H * dv);
      };
      std::vector<double> expected;
      for (int i = 0; i < b; ++i) {
        const std::vector<float> row_q(q.begin() + i * q_stride,
                                       q.begin() + (i + 1) * q_stride);
        const std::vector<int32_t> row_codes(codes.begin() + i * H,
                                             codes.begin() + (i + 1) * H);
        const std::vector<double> row = ReferenceAttention(
            data, batch.slots[i], batch.positions[i], 1, row_q, q_stride,
            row_codes, values, i * value_stride, value_stride);
        expected.insert(expected.end(), row.begin(), row.end());
      }
      const std::string what =
          "DecodeAttention " + ShapeName(shape) + " batch " + std::to_string(b);
      const std::vector<float> actual = run(backend());
      ExpectClose(actual, expected, tolerances().attention_atol,
                  tolerances().attention_rtol, what);
      if (!is_cpu() && dtype() == DType::kF32) {
        ExpectCloseRelativeToOne(actual, run(cpu_), 1e-5,
                                 what + " vs CpuBackend");
      }
    }
  }
}

TEST_P(AttentionConformanceTest, UpdateStateAndUpdateStateBatch) {
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kUpdateState);
  for (const AttentionShape& shape : {AttentionShape{2, 11, 8, 16, 37, true},
                                      AttentionShape{1, 5, 4, 16, 130, true}}) {
    const int H = shape.n_head, S = shape.n_code, M = shape.mem_len,
              dv = shape.d_v, slots = 4;
    HostSublayer data = RandomSublayer(shape, slots);
    // A prefill block into slot 1 that wraps the ring twice, then a decode
    // batch of scattered slots.
    const int n = 2 * M + 3, value_stride = H * dv + 7;
    const int64_t first_position = M - 1;
    const std::vector<float> values = Floats(n * value_stride, -1, 1);
    std::vector<int32_t> codes(n * H);
    for (int32_t& code : codes) code = Int(0, S - 1);
    const std::vector<int> batch_slots = {3, 0, 1};
    const std::vector<int64_t> batch_positions = {M, M + 1, first_position + n};
    const std::vector<float> batch_values = Floats(3 * value_stride, -1, 1);
    std::vector<int32_t> batch_codes(3 * H);
    for (int32_t& code : batch_codes) code = Int(0, S - 1);

    auto run = [&](Backend& on) {
      HostSublayer result = data;
      DeviceSublayer s = Upload(on, data);
      DeviceBuffer dvalues = On(on, values), dcodes = On(on, codes),
                   dbatch_values = On(on, batch_values),
                   dbatch_codes = On(on, batch_codes);
      absl::Status status = on.UpdateState(shape, s.state(), 1, first_position,
                                           n, dcodes.as<int32_t>(),
                                           dvalues.as<float>(), value_stride);
      EXPECT_TRUE(status.ok()) << status;
      status = on.UpdateStateBatch(
          shape, s.state(), batch_slots.data(), batch_positions.data(), 3,
          dbatch_codes.as<int32_t>(), dbatch_values.as<float>(), value_stride);
      EXPECT_TRUE(status.ok()) << status;
      ReadState(on, s, result);
      return result;
    };
    const HostSublayer actual = run(backend());

    HostSublayer expected = data;
    std::vector<double> means = Widen(data.means);
    for (int i = 0; i < n; ++i) {
      ReferenceAbsorb(expected, means, 1, first_position + i,
                      codes.data() + i * H,
                      values.data() + static_cast<size_t>(i) * value_stride);
    }
    for (int b = 0; b < 3; ++b) {
      ReferenceAbsorb(
          expected, means, batch_slots[b], batch_positions[b],
          batch_codes.data() + b * H,
          batch_values.data() + static_cast<size_t>(b) * value_stride);
    }
    const std::string what = "UpdateState " + ShapeName(shape);
    EXPECT_EQ(actual.window_codes, expected.window_codes) << what;
    EXPECT_EQ(actual.counts, expected.counts) << what;
    EXPECT_EQ(actual.window_values, expected.window_values) << what;
    ExpectClose(actual.means, means, tolerances().mean_atol,
                tolerances().mean_rtol, what + " means");
    if (!is_cpu() && dtype() == DType::kF32) {
      // The state update is exact given the same inputs.
      const HostSublayer cpu = run(cpu_);
      EXPECT_EQ(0, std::memcmp(actual.means.data(), cpu.means.data(),
                               sizeof(float) * cpu.means.size()))
          << what << ": means vs CpuBackend";
      EXPECT_EQ(actual.counts, cpu.counts) << what << " vs CpuBackend";
      EXPECT_EQ(actual.window_codes, cpu.window_codes)
          << what << " vs CpuBackend";
    }
  }
}

// The former CudaBackendTest.AttentionAndStateUpdatesMatchCpu, unchanged:
// VqAssign, a prefill block, its state update, a decode batch and its
// update, against the CPU.
TEST_P(AttentionConformanceTest, AttentionSequenceMatchesCpu) {
  if (is_cpu()) GTEST_SKIP() << "the CPU backend is the reference";
  TVQ_SKIP_UNLESS_SUPPORTED(Op::kBlockAttention);
  const AttentionShape shape{.n_head = 2,
                             .n_code = 13,
                             .mem_len = 7,
                             .d_k = 16,
                             .d_v = 20,
                             .agg_cache = true};
  const int H = shape.n_head, M = shape.mem_len, dk = shape.d_k, dv = shape.d_v;
  const HostSublayer data = RandomSublayer(shape, 4);
  const int n = 11, kvg_stride = H * (dk + 2 * dv) + 1, q_stride = H * dk + 2;
  const std::vector<float> kvg = Floats(n * kvg_stride, -2, 2);
  const std::vector<float> q = Floats(n * q_stride, -2, 2);
  const int batch_slots[3] = {3, 0, 2};
  const int64_t batch_positions[3] = {M - 1, M + 1, 30};

  std::vector<float> outputs[2], states[2];
  std::vector<int32_t> codes_out[2], state_codes[2];
  Backend* backends[2] = {&cpu_, backend_.get()};
  for (int which = 0; which < 2; ++which) {
    Backend& on = *backends[which];
    DeviceSublayer s = Upload(on, data);
    DeviceBuffer keys = On(on, kvg), queries = On(on, q);
    DeviceBuffer codes = on.Allocate(sizeof(int32_t) * n * H).value();
    DeviceBuffer out = on.Allocate(sizeof(float) * n * H * dv).value();
    const float* values = keys.as<float>() + H * dk;
    ASSERT_TRUE(on.VqAssign(n, shape, s.tables(), keys.as<float>(), kvg_stride,
                            codes.as<int32_t>())
                    .ok());
    codes_out[which] = Read<int32_t>(on, codes, n * H);
    ASSERT_TRUE(on.BlockAttention(shape, s.tables(), s.state(), 2, 5, n,
                                  queries.as<float>(), q_stride,
                                  codes.as<int32_t>(), values, kvg_stride,
                                  out.as<float>())
                    .ok());
    std::vector<float> result = Read<float>(on, out, n * H * dv);
    ASSERT_TRUE(on.UpdateState(shape, s.state(), 2, 5, n, codes.as<int32_t>(),
                               values, kvg_stride)
                    .ok());
    ASSERT_TRUE(on.DecodeAttention(shape, s.tables(), s.state(), batch_slots,
                                   batch_positions, 3, queries.as<float>(),
                                   q_stride, codes.as<int32_t>(), values,
                                   kvg_stride, out.as<float>())
                    .ok());
    const std::vector<float> decoded = Read<float>(on, out, 3 * H * dv);
    result.insert(result.end(), decoded.begin(), decoded.end());
    ASSERT_TRUE(on.UpdateStateBatch(shape, s.state(), batch_slots,
                                    batch_positions, 3, codes.as<int32_t>(),
                                    values, kvg_stride)
                    .ok());
    outputs[which] = result;
    HostSublayer final_state = data;
    ReadState(on, s, final_state);
    states[which] = final_state.counts;
    states[which].insert(states[which].end(), final_state.means.begin(),
                         final_state.means.end());
    states[which].insert(states[which].end(), final_state.window_values.begin(),
                         final_state.window_values.end());
    state_codes[which] = final_state.window_codes;
  }
  EXPECT_EQ(codes_out[1], codes_out[0]) << "VQ codes";
  ExpectCloseRelativeToOne(outputs[1], outputs[0], 1e-5,
                           "block then decode attention");
  // The state update is exact given the same inputs.
  EXPECT_EQ(0, std::memcmp(states[1].data(), states[0].data(),
                           sizeof(float) * states[0].size()))
      << "counts, means and window values after the updates";
  EXPECT_EQ(state_codes[1], state_codes[0]) << "window codes after the updates";
}

// ------------------------------------------------------------ refusals

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::string& fragment) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_NE(status.message().find(fragment), std::string::npos)
      << "\"" << status.message() << "\" lacks \"" << fragment << "\"";
}

TEST_P(AttentionConformanceTest, SlotsOutOfRangeOrRepeatedAreRefused) {
  const AttentionShape shape{2, 11, 8, 16, 12, true};
  const HostSublayer data = RandomSublayer(shape, 3);
  DeviceSublayer s = Upload(backend(), data);
  const int H = shape.n_head, dk = shape.d_k, dv = shape.d_v;
  DeviceBuffer q = On(backend(), Floats(4 * H * dk));
  DeviceBuffer values = On(backend(), Floats(4 * H * dv));
  DeviceBuffer codes = On(backend(), std::vector<int32_t>(4 * H, 0));
  DeviceBuffer out = backend().Allocate(sizeof(float) * 4 * H * dv).value();
  const std::string name = backend().Name();
  const int64_t positions[3] = {1, 2, 3};
  auto decode = [&](const std::vector<int>& slots) {
    return backend().DecodeAttention(
        shape, s.tables(), s.state(), slots.data(), positions,
        static_cast<int>(slots.size()), q.as<float>(), H * dk,
        codes.as<int32_t>(), values.as<float>(), H * dv, out.as<float>());
  };
  auto update = [&](const std::vector<int>& slots) {
    return backend().UpdateStateBatch(shape, s.state(), slots.data(), positions,
                                      static_cast<int>(slots.size()),
                                      codes.as<int32_t>(), values.as<float>(),
                                      H * dv);
  };
  ExpectError(decode({0, 3}), absl::StatusCode::kOutOfRange,
              name + "::DecodeAttention: slot 3 is outside [0, 3)");
  ExpectError(decode({-1}), absl::StatusCode::kOutOfRange,
              "slot -1 is outside [0, 3)");
  ExpectError(decode({2, 0, 2}), absl::StatusCode::kInvalidArgument,
              name + "::DecodeAttention: slot 2 appears twice in the batch");
  ExpectError(update({1, 1}), absl::StatusCode::kInvalidArgument,
              name + "::UpdateStateBatch: slot 1 appears twice in the batch");
  ExpectError(update({5}), absl::StatusCode::kOutOfRange,
              name + "::UpdateStateBatch: slot 5 is outside [0, 3)");
  ExpectError(
      backend().BlockAttention(shape, s.tables(), s.state(), 3, 0, 2,
                               q.as<float>(), H * dk, codes.as<int32_t>(),
                               values.as<float>(), H * dv, out.as<float>()),
      absl::StatusCode::kOutOfRange,
      name + "::BlockAttention: slot 3 is outside [0, 3)");
  ExpectError(
      backend().UpdateState(shape, s.state(), 7, 0, 2, codes.as<int32_t>(),
                            values.as<float>(), H * dv),
      absl::StatusCode::kOutOfRange,
      name + "::UpdateState: slot 7 is outside [0, 3)");
  // An empty batch reads no slot (the slot array may be null).
  EXPECT_TRUE(backend()
                  .DecodeAttention(shape, s.tables(), s.state(), nullptr,
                                   nullptr, 0, q.as<float>(), H * dk,
                                   codes.as<int32_t>(), values.as<float>(),
                                   H * dv, out.as<float>())
                  .ok());
}

TEST_P(AttentionConformanceTest, BadShapesStridesAndPointersAreRefused) {
  const AttentionShape shape{2, 11, 8, 16, 12, true};
  const HostSublayer data = RandomSublayer(shape, 2);
  DeviceSublayer s = Upload(backend(), data);
  const int H = shape.n_head, dk = shape.d_k, dv = shape.d_v;
  DeviceBuffer q = On(backend(), Floats(4 * H * dk));
  DeviceBuffer values = On(backend(), Floats(4 * H * dv));
  DeviceBuffer codes = On(backend(), std::vector<int32_t>(4 * H, 0));
  DeviceBuffer out = backend().Allocate(sizeof(float) * 4 * H * dv).value();
  const std::string name = backend().Name();
  AttentionShape empty_codebook = shape;
  empty_codebook.n_code = 0;
  ExpectError(backend().VqAssign(2, empty_codebook, s.tables(), q.as<float>(),
                                 H * dk, codes.as<int32_t>()),
              absl::StatusCode::kInvalidArgument,
              name + "::VqAssign: attention shape needs every size >= 1");
  ExpectError(
      backend().BlockAttention(shape, s.tables(), s.state(), 0, 0, 2,
                               q.as<float>(), H * dk - 1, codes.as<int32_t>(),
                               values.as<float>(), H * dv, out.as<float>()),
      absl::StatusCode::kInvalidArgument,
      "the row stride of q (31) is less than its row width (32)");
  AttentionTables no_codebook = s.tables();
  no_codebook.codebook = nullptr;
  ExpectError(backend().VqAssign(2, shape, no_codebook, q.as<float>(), H * dk,
                                 codes.as<int32_t>()),
              absl::StatusCode::kInvalidArgument,
              name + "::VqAssign: the codebook is null");
  ExpectError(backend().Silu(3, 10, nullptr, 10),
              absl::StatusCode::kInvalidArgument, name + "::Silu: x is null");
  ExpectError(backend().Multiply(3, 10, out.as<float>(), 10, q.as<float>(), 4),
              absl::StatusCode::kInvalidArgument,
              "the row stride of gate (4) is less than its row width (10)");
  DeviceBuffer c = backend().Allocate(sizeof(float) * 16).value();
  ExpectError(backend().Gemm({.a = F32(q.as<const float>(), {4, 3}),
                              .b = F32(values.as<const float>(), {5, 4}),
                              .c = F32(c.as<float>(), {4, 4})}),
              absl::StatusCode::kInvalidArgument,
              name + "::Gemm: b must be a [3, 4] matrix, got rank 2 [5, 4]");
}

TEST_P(BackendConformanceTest, UnsupportedDTypeIsRefusedByName) {
  if (dtype() == DType::kF32) {
    EXPECT_TRUE(backend().Supports(Op::kGemm, DType::kF32));
    GTEST_SKIP() << "every backend supports F32";
  }
  if (backend().Supports(Op::kGemm, dtype())) {
    GTEST_SKIP() << backend().Name() << " supports " << DTypeName(dtype());
  }
  const std::string name = backend().Name();
  const std::string dtype_name = DTypeName(dtype());
  const std::vector<float> host = Floats(12);
  const std::vector<unsigned char> bytes = Encode(dtype(), host);
  const int64_t shape[2] = {3, 4};
  const TensorView weights = TensorView::Of(bytes.data(), dtype(), shape);
  DeviceBuffer storage;
  ExpectError(
      backend().UploadWeights(weights, &storage).status(),
      absl::StatusCode::kUnimplemented,
      name + "::UploadWeights does not support " + dtype_name + " weights yet");
  // Weights already in backend memory (as a loader for that dtype would
  // leave them) are refused by the op that would read them.
  DeviceBuffer device_weights = On(backend(), bytes);
  DeviceBuffer a = On(backend(), Floats(6)), c = On(backend(), Floats(8));
  const TensorView device_view =
      TensorView::Of(device_weights.get(), dtype(), shape);
  ExpectError(backend().Gemm({.a = F32(a.as<const float>(), {2, 3}),
                              .b = device_view,
                              .c = F32(c.as<float>(), {2, 4})}),
              absl::StatusCode::kUnimplemented,
              name + "::Gemm does not support " + dtype_name + " weights yet");
  const int64_t table_shape[2] = {2, 6};
  const TensorView table =
      TensorView::Of(device_weights.get(), dtype(), table_shape);
  const int32_t tokens[1] = {1};
  const int64_t positions[1] = {0};
  ExpectError(
      backend().Embed(table, tokens, positions, 1, false, 0, 1e4,
                      c.as<float>()),
      absl::StatusCode::kUnimplemented,
      name + "::Embed does not support " + dtype_name + " embeddings yet");
  const int64_t vector_shape[1] = {4};
  const TensorView gain =
      TensorView::Of(device_weights.get(), dtype(), vector_shape);
  ExpectError(
      backend().RmsNorm(2, 4, c.as<float>(), 4, gain, TensorView(),
                        c.as<float>(), 4),
      absl::StatusCode::kUnimplemented,
      name + "::RmsNorm does not support " + dtype_name + " weights yet");
  ExpectError(
      backend().LogSoftmax(2, 4, gain, 1.0f, c.as<float>()),
      absl::StatusCode::kUnimplemented,
      name + "::LogSoftmax does not support " + dtype_name + " weights yet");
}

TEST_P(AttentionConformanceTest, UnsupportedStateDTypeIsRefusedByName) {
  if (dtype() == DType::kF32 ||
      backend().Supports(Op::kDecodeAttention, dtype())) {
    GTEST_SKIP() << backend().Name() << " supports " << DTypeName(dtype());
  }
  const AttentionShape shape{2, 11, 8, 16, 12, true};
  const HostSublayer data = RandomSublayer(shape, 2);
  DeviceSublayer s = Upload(backend(), data);
  s.dtype = dtype();  // tables and state declared as the unsupported dtype
  const int H = shape.n_head, dk = shape.d_k, dv = shape.d_v;
  DeviceBuffer q = On(backend(), Floats(H * dk));
  DeviceBuffer values = On(backend(), Floats(H * dv));
  DeviceBuffer codes = On(backend(), std::vector<int32_t>(H, 0));
  DeviceBuffer out = backend().Allocate(sizeof(float) * H * dv).value();
  const int slots[1] = {1};
  const int64_t positions[1] = {4};
  const std::string name = backend().Name();
  const std::string dtype_name = DTypeName(dtype());
  ExpectError(
      backend().DecodeAttention(shape, s.tables(), s.state(), slots, positions,
                                1, q.as<float>(), H * dk, codes.as<int32_t>(),
                                values.as<float>(), H * dv, out.as<float>()),
      absl::StatusCode::kUnimplemented,
      name + "::DecodeAttention does not support " + dtype_name +
          " attention tables yet");
  ExpectError(
      backend().UpdateState(shape, s.state(), 1, 4, 1, codes.as<int32_t>(),
                            values.as<float>(), H * dv),
      absl::StatusCode::kUnimplemented,
      name + "::UpdateState does not support " + dtype_name + " state yet");
  ExpectError(backend().VqAssign(1, shape, s.tables(), q.as<float>(), H * dk,
                                 codes.as<int32_t>()),
              absl::StatusCode::kUnimplemented,
              name + "::VqAssign does not support " + dtype_name +
                  " attention tables yet");
}

// ------------------------------------------------------------ instances

[[maybe_unused]] absl::StatusOr<std::unique_ptr<Backend>> MakeCpu() {
  return std::unique_ptr<Backend>(std::make_unique<CpuBackend>(2));
}

// backend_conformance_test: the CPU cases, and the CUDA ones when the build
// has CUDA (they skip without a GPU). backend_conformance_emulated_test
// (TVQ_CONFORMANCE_EMULATED_CUDA) runs only the CUDA cases, on the real
// CudaBackend over the emulated runtime (emulated_cuda_runtime.cc) and the
// kernel sources compiled for the CPU emulator.
std::vector<BackendCase> Cases() {
  std::vector<BackendCase> cases;
#ifndef TVQ_CONFORMANCE_EMULATED_CUDA
  cases.push_back({"Cpu_F32", MakeCpu, DType::kF32, true});
  cases.push_back({"Cpu_BF16", MakeCpu, DType::kBF16, true});
  [[maybe_unused]] const std::string cuda = "Cuda";
#else
  [[maybe_unused]] const std::string cuda = "CudaEmulated";
#endif
#ifdef TVQ_WITH_CUDA
  auto make_cuda = []() { return CreateCudaBackend(BackendOptions{}, 0); };
  cases.push_back({cuda + "_F32", make_cuda, DType::kF32, false});
  cases.push_back({cuda + "_BF16", make_cuda, DType::kBF16, false});
#endif
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<BackendCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendConformanceTest,
                         ::testing::ValuesIn(Cases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Backends, AttentionConformanceTest,
                         ::testing::ValuesIn(Cases()), CaseName);

}  // namespace
}  // namespace tvq::runtime
