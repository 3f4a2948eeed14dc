// CudaBackend, op by op, against CpuBackend on seeded random inputs; and the
// backend factory's answers on a machine without a GPU (those run here).
// Every GPU case skips with the CUDA error when no device is usable.
#include "server/backend/cuda/cuda_backend.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/backend/backend.h"
#include "server/backend/cpu/cpu_backend.h"

namespace tvq::runtime {
namespace {

// The reason CUDA cannot be used here, or "" when it can.
std::string CudaUnavailable() {
  static const std::string* reason = [] {
    absl::StatusOr<std::unique_ptr<CudaBackend>> backend =
        CudaBackend::Create(0);
    return new std::string(
        backend.ok() ? "" : std::string(backend.status().message()));
  }();
  return *reason;
}

TEST(CudaBackendFactory, CudaWithoutAGpuIsAFailedPreconditionNamingTheCause) {
  if (CudaUnavailable().empty()) GTEST_SKIP() << "a GPU is present";
  for (const std::string device : {"cuda", "cuda:0", "cuda:3"}) {
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        CreateBackend({.device = device});
    ASSERT_FALSE(backend.ok()) << device;
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition)
        << backend.status();
    EXPECT_NE(backend.status().message().find("no usable CUDA device"),
              std::string::npos)
        << backend.status();
  }
}

TEST(CudaBackendFactory, AutoFallsBackToTheCpuWithoutAGpu) {
  if (CudaUnavailable().empty()) GTEST_SKIP() << "a GPU is present";
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend({.device = "auto", .num_threads = 1});
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->device(), DeviceKind::kCpu);
}

TEST(CudaBackendFactory, AutoPicksCudaWithAGpu) {
  if (!CudaUnavailable().empty()) GTEST_SKIP() << CudaUnavailable();
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend({.device = "auto"});
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->device(), DeviceKind::kCuda);
  EXPECT_NE((*backend)->DeviceName().find("cuda:0"), std::string::npos);
  absl::StatusOr<std::unique_ptr<Backend>> missing =
      CreateBackend({.device = "cuda:999"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = CudaUnavailable(); !why.empty()) {
      GTEST_SKIP() << "no CUDA device: " << why;
    }
    cuda_ = CudaBackend::Create(0).value();
  }

  std::vector<float> Floats(size_t n, float low = -1, float high = 1) {
    std::uniform_real_distribution<float> distribution(low, high);
    std::vector<float> values(n);
    for (float& value : values) value = distribution(engine_);
    return values;
  }
  int Int(int low, int high) {
    return std::uniform_int_distribution<int>(low, high)(engine_);
  }

  // A copy of `host` in the memory of `backend` (CPU: plain memory).
  template <typename T>
  DeviceBuffer On(Backend& backend, const std::vector<T>& host) {
    DeviceBuffer buffer =
        backend.Allocate(sizeof(T) * std::max<size_t>(host.size(), 1)).value();
    EXPECT_TRUE(
        backend.CopyToDevice(buffer.get(), host.data(), sizeof(T) * host.size())
            .ok());
    return buffer;
  }
  template <typename T>
  std::vector<T> Read(Backend& backend, const DeviceBuffer& buffer,
                      size_t count) {
    std::vector<T> host(count);
    const absl::Status status =
        backend.CopyToHost(host.data(), buffer.get(), sizeof(T) * count);
    EXPECT_TRUE(status.ok()) << status;
    return host;
  }

  static void ExpectClose(const std::vector<float>& actual,
                          const std::vector<float>& expected, double tolerance,
                          const std::string& what) {
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

  std::mt19937 engine_{2024};
  CpuBackend cpu_{1};
  std::unique_ptr<CudaBackend> cuda_;
};

TEST_F(CudaBackendTest, MemoryOperations) {
  DeviceBuffer zeroed = cuda_->Allocate(1000).value();
  std::vector<unsigned char> bytes(1000, 7);
  ASSERT_TRUE(cuda_->CopyToHost(bytes.data(), zeroed.get(), 1000).ok());
  EXPECT_EQ(bytes, std::vector<unsigned char>(1000, 0))
      << "allocations are zeroed";

  const std::vector<float> values = Floats(300);
  DeviceBuffer a = On(*cuda_, values);
  DeviceBuffer b = cuda_->Allocate(sizeof(float) * 300).value();
  ASSERT_TRUE(cuda_->CopyOnDevice(b.get(), a.get(), sizeof(float) * 300).ok());
  EXPECT_EQ(Read<float>(*cuda_, b, 300), values);
  EXPECT_EQ(cuda_->CopyOnDevice(a.as<float>() + 1, a.get(), sizeof(float) * 10)
                .code(),
            absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(cuda_->Fill(b.as<float>() + 5, 100, -2.5f).ok());
  std::vector<float> filled = values;
  std::fill_n(filled.begin() + 5, 100, -2.5f);
  EXPECT_EQ(Read<float>(*cuda_, b, 300), filled);
  ASSERT_TRUE(cuda_->FillInt(b.as<int32_t>(), 7, -1).ok());
  EXPECT_EQ(Read<int32_t>(*cuda_, b, 8)[6], -1);

  DeviceBuffer storage;
  const float* weights =
      cuda_->UploadWeights(values.data(), values.size(), &storage).value();
  std::vector<float> back(values.size());
  ASSERT_TRUE(
      cuda_->CopyToHost(back.data(), weights, sizeof(float) * back.size())
          .ok());
  EXPECT_EQ(back, values);
  ASSERT_TRUE(cuda_->Synchronize().ok());
}

TEST_F(CudaBackendTest, GemmMatchesCpuForEveryLayout) {
  for (const bool transpose_a : {false, true}) {
    for (const bool transpose_b : {false, true}) {
      for (const bool invariant : {false, true}) {
        const int m = 37, n = 45, k = 70;
        const int lda = (transpose_a ? m : k) + 3,
                  ldb = (transpose_b ? k : n) + 2, ldc = n + 5;
        const std::vector<float> a =
            Floats(static_cast<size_t>(transpose_a ? k : m) * lda);
        const std::vector<float> b =
            Floats(static_cast<size_t>(transpose_b ? n : k) * ldb);
        const std::vector<float> c = Floats(static_cast<size_t>(m) * ldc);
        std::vector<float> results[2];
        Backend* backends[2] = {&cpu_, cuda_.get()};
        for (int which = 0; which < 2; ++which) {
          Backend& backend = *backends[which];
          DeviceBuffer da = On(backend, a), db = On(backend, b),
                       dc = On(backend, c);
          const absl::Status status =
              backend.Gemm({.transpose_a = transpose_a,
                            .transpose_b = transpose_b,
                            .m = m,
                            .n = n,
                            .k = k,
                            .alpha = 1,
                            .a = da.as<float>(),
                            .lda = lda,
                            .b = db.as<float>(),
                            .ldb = ldb,
                            .beta = 0.5f,
                            .c = dc.as<float>(),
                            .ldc = ldc,
                            .batch_invariant = invariant});
          ASSERT_TRUE(status.ok()) << status;
          results[which] = Read<float>(backend, dc, c.size());
        }
        ExpectClose(results[1], results[0], 1e-5,
                    std::string("gemm") + (transpose_a ? " a^T" : "") +
                        (transpose_b ? " b^T" : "") +
                        (invariant ? " invariant" : ""));
      }
    }
  }
}

TEST_F(CudaBackendTest, RowOperationsMatchCpu) {
  const int rows = 5, d_model = 70, vocab = 41;
  const std::vector<float> embeddings = Floats(vocab * d_model);
  const std::vector<float> gain = Floats(d_model, 0.5, 1.5),
                           bias = Floats(d_model);
  const std::vector<float> gate = Floats(rows * d_model, -2, 2);
  std::vector<float> results[2];
  Backend* backends[2] = {&cpu_, cuda_.get()};
  for (int which = 0; which < 2; ++which) {
    Backend& backend = *backends[which];
    DeviceBuffer table = On(backend, embeddings), g = On(backend, gain),
                 bi = On(backend, bias), gt = On(backend, gate);
    DeviceBuffer x = backend.Allocate(sizeof(float) * rows * d_model).value();
    DeviceBuffer y = backend.Allocate(sizeof(float) * rows * d_model).value();
    // Two calls with same-sized but different index arrays: the device copy
    // of the indices must follow.
    for (int call = 0; call < 2; ++call) {
      const std::vector<int32_t> tokens =
          call == 0 ? std::vector<int32_t>{1, 5, 7, 40, 0}
                    : std::vector<int32_t>{2, 5, 9, 11, 3};
      const std::vector<int64_t> positions = {0, 7, 8, 9, 100000 + call};
      ASSERT_TRUE(backend
                      .Embed(table.as<float>(), d_model, tokens.data(),
                             positions.data(), rows, true, 0.5f, 10000.0,
                             x.as<float>())
                      .ok());
    }
    ASSERT_TRUE(backend
                    .RmsNorm(rows, d_model, x.as<float>(), d_model,
                             g.as<float>(), bi.as<float>(), y.as<float>(),
                             d_model)
                    .ok());
    ASSERT_TRUE(
        backend.HeadRmsNorm(rows, 5, 14, y.as<float>(), d_model, 0.25f).ok());
    ASSERT_TRUE(backend.Silu(rows, 60, y.as<float>(), d_model).ok());
    ASSERT_TRUE(
        backend
            .Multiply(rows, 50, y.as<float>(), d_model, gt.as<float>(), d_model)
            .ok());
    ASSERT_TRUE(
        backend.LogSoftmax(rows, d_model, bi.as<float>(), 0.7f, y.as<float>())
            .ok());
    results[which] = Read<float>(backend, y, rows * d_model);
  }
  ExpectClose(results[1], results[0], 2e-5,
              "embed, norms, silu, multiply, log-softmax");
}

// One attention sublayer's tables and a random state, on one backend.
struct Sublayer {
  DeviceBuffer codebook, sq_norm, relative, u, v;
  DeviceBuffer counts, means, window_codes, window_values;
  AttentionTables tables() const {
    return {codebook.as<float>(), sq_norm.as<float>(), relative.as<float>(),
            u.as<float>(), v.as<float>()};
  }
  SublayerState state() const {
    return {counts.as<float>(), means.as<float>(), window_codes.as<int32_t>(),
            window_values.as<float>()};
  }
};

TEST_F(CudaBackendTest, AttentionAndStateUpdatesMatchCpu) {
  const AttentionShape shape{.n_head = 2,
                             .n_code = 13,
                             .mem_len = 7,
                             .d_k = 16,
                             .d_v = 20,
                             .agg_cache = true};
  const int H = shape.n_head, S = shape.n_code, M = shape.mem_len,
            dk = shape.d_k, dv = shape.d_v, slots = 4;
  std::vector<float> codebook = Floats(H * S * dk, -0.5, 0.5), sq_norm(H * S);
  for (int hs = 0; hs < H * S; ++hs) {
    float sum = 0;
    for (int c = 0; c < dk; ++c)
      sum += codebook[hs * dk + c] * codebook[hs * dk + c];
    sq_norm[hs] = sum;
  }
  const std::vector<float> relative = Floats(H * (M + 1) * dk, -0.5, 0.5);
  const std::vector<float> u = Floats(H * dk, -0.3, 0.3),
                           v = Floats(H * dk, -0.3, 0.3);
  std::vector<float> counts(slots * H * S);
  for (float& count : counts)
    count = Int(0, 3) == 0 ? 0.0f : static_cast<float>(Int(1, 9));
  const std::vector<float> means = Floats(slots * H * S * dv);
  std::vector<int32_t> window_codes(slots * H * M);
  for (int32_t& code : window_codes) code = Int(0, 4) == 0 ? -1 : Int(0, S - 1);
  const std::vector<float> window_values = Floats(slots * H * M * dv);
  // A prefill block of n tokens for slot 2, then a decode batch.
  const int n = 11, kvg_stride = H * (dk + 2 * dv) + 1, q_stride = H * dk + 2;
  const std::vector<float> kvg = Floats(n * kvg_stride, -2, 2);
  const std::vector<float> q = Floats(n * q_stride, -2, 2);
  const int batch_slots[3] = {3, 0, 2};
  const int64_t batch_positions[3] = {M - 1, M + 1, 30};

  std::vector<float> outputs[2], states[2];
  std::vector<int32_t> codes_out[2], state_codes[2];
  Backend* backends[2] = {&cpu_, cuda_.get()};
  for (int which = 0; which < 2; ++which) {
    Backend& backend = *backends[which];
    Sublayer s{On(backend, codebook),
               On(backend, sq_norm),
               On(backend, relative),
               On(backend, u),
               On(backend, v),
               On(backend, counts),
               On(backend, means),
               On(backend, window_codes),
               On(backend, window_values)};
    DeviceBuffer keys = On(backend, kvg), queries = On(backend, q);
    DeviceBuffer codes = backend.Allocate(sizeof(int32_t) * n * H).value();
    DeviceBuffer out = backend.Allocate(sizeof(float) * n * H * dv).value();
    const float* values = keys.as<float>() + H * dk;
    ASSERT_TRUE(backend
                    .VqAssign(n, shape, s.tables(), keys.as<float>(),
                              kvg_stride, codes.as<int32_t>())
                    .ok());
    codes_out[which] = Read<int32_t>(backend, codes, n * H);
    ASSERT_TRUE(backend
                    .BlockAttention(shape, s.tables(), s.state(), 2, 5, n,
                                    queries.as<float>(), q_stride,
                                    codes.as<int32_t>(), values, kvg_stride,
                                    out.as<float>())
                    .ok());
    std::vector<float> result = Read<float>(backend, out, n * H * dv);
    ASSERT_TRUE(backend
                    .UpdateState(shape, s.state(), 2, 5, n, codes.as<int32_t>(),
                                 values, kvg_stride)
                    .ok());
    ASSERT_TRUE(backend
                    .DecodeAttention(shape, s.tables(), s.state(), batch_slots,
                                     batch_positions, 3, queries.as<float>(),
                                     q_stride, codes.as<int32_t>(), values,
                                     kvg_stride, out.as<float>())
                    .ok());
    const std::vector<float> decoded = Read<float>(backend, out, 3 * H * dv);
    result.insert(result.end(), decoded.begin(), decoded.end());
    ASSERT_TRUE(backend
                    .UpdateStateBatch(shape, s.state(), batch_slots,
                                      batch_positions, 3, codes.as<int32_t>(),
                                      values, kvg_stride)
                    .ok());
    outputs[which] = result;
    states[which] = Read<float>(backend, s.counts, counts.size());
    const std::vector<float> final_means =
        Read<float>(backend, s.means, means.size());
    const std::vector<float> final_values =
        Read<float>(backend, s.window_values, window_values.size());
    states[which].insert(states[which].end(), final_means.begin(),
                         final_means.end());
    states[which].insert(states[which].end(), final_values.begin(),
                         final_values.end());
    state_codes[which] =
        Read<int32_t>(backend, s.window_codes, window_codes.size());
  }
  EXPECT_EQ(codes_out[1], codes_out[0]) << "VQ codes";
  ExpectClose(outputs[1], outputs[0], 1e-5, "block then decode attention");
  // The state update is exact given the same inputs.
  EXPECT_EQ(0, std::memcmp(states[1].data(), states[0].data(),
                           sizeof(float) * states[0].size()))
      << "counts, means and window values after the updates";
  EXPECT_EQ(state_codes[1], state_codes[0]) << "window codes after the updates";
}

}  // namespace
}  // namespace tvq::runtime
