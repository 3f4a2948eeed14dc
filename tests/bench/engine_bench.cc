// CPU engine benchmark (issues 3 and 16): prefill tokens/s at 1k/8k/64k-token
// prompts; decode tokens/s at batch 1/8/32/64 with F32 and with BF16
// weights and state, as tokens/s and as the fraction of the memory-bandwidth
// roofline measured in the same run (BM_MemoryReadBandwidth: a streaming
// read of 1 GiB on every core); the decode GEMM's new register-blocked
// kernel against the previous one (tests/bench/legacy_skinny_gemm.cc) on the
// model's shapes; the weighted sum over the state's values, four rows per
// pass against one (BM_WeightedValues).
//
// Model: random weights, d_model 256, d_k 128, d_v 512, 1 head, 4 layers (8
// attention sublayers), S 256, L = M = 128, byte vocabulary (259).
//
//   build/release/tests/bench/engine_bench --benchmark_counters_tabular=true
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/bf16.h"
#include "kernels/cpu/elementwise_cpu.h"
#include "kernels/cpu/parallel_for.h"
#include "kernels/cpu/skinny_gemm_cpu.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "server/model/model_dir.h"
#include "server/text/byte_tokenizer.h"
#include "tests/bench/legacy_skinny_gemm.h"
#include "tests/support/test_util.h"

namespace tvq::runtime {
namespace {

constexpr int kMaxBatch = 64;

ModelConfig BenchConfig() {
  ModelConfig config = testing::SmallConfig(256, 128, 512, 1, 256, 4, 128, 128);
  config.agg_cache = true;
  return config;
}

// Bytes of weights one decode step reads: every sublayer's projections
// (of `matrix_bytes` per element: 4 for F32, 2 for BF16), codebook and
// relative table, the input norm, and the output head (float32 tables).
double WeightBytesPerStep(const ModelConfig& c, double matrix_bytes) {
  const double H = c.n_head, D = c.d_model, dk = c.d_k, dv = c.d_v,
               S = c.n_code, M = c.mem_len, V = c.n_vocab;
  const double matrices = D * H * dk + D * H * (dk + 2 * dv) + H * dv * D;
  const double tables =
      H * S * dk + H * S + H * (M + 1) * dk + 2 * H * dk + 2 * D;
  return c.num_sublayers() * (matrix_bytes * matrices + 4 * tables) +
         matrix_bytes * D * V + 4 * V;
}

// The bench model assembled by the core, as the server does: the CPU
// backend (TVQ_BENCH_THREADS threads; default every core), kMaxBatch slots,
// and prompts fed to the forward pass in chunks of up to 4096 tokens
// (TransformerVq's default chunk; the bench measures whole-prompt prefill).
core::ModelRuntime BenchRuntime(const ModelConfig& config, DType dtype) {
  LoadedModel model;
  model.weights = testing::RandomModel(config, 42);
  model.tokenizer = std::make_unique<ByteTokenizer>();
  core::EngineConfig engine_config;
  engine_config.device = "cpu";
  engine_config.threads = std::getenv("TVQ_BENCH_THREADS") != nullptr
                              ? std::atoi(std::getenv("TVQ_BENCH_THREADS"))
                              : 0;
  engine_config.num_slots = kMaxBatch;
  engine_config.prefill_chunk = 4096;
  engine_config.weights_dtype = dtype;
  engine_config.state_dtype = dtype;
  return core::BuildModelRuntime(std::move(model), engine_config).value();
}

// One engine per dtype (weights and state both F32, or both BF16).
struct Fixture {
  explicit Fixture(DType dtype) : dtype(dtype) {}
  DType dtype;
  ModelConfig config = BenchConfig();
  core::ModelRuntime runtime = BenchRuntime(config, dtype);
  TransformerVq* engine = runtime.transformer.get();
  StatePool* pool = runtime.pool.get();
  // context length -> exported state after prefilling that many tokens
  std::map<int, std::string> contexts;

  const std::string& Context(int length) {
    auto it = contexts.find(length);
    if (it != contexts.end()) return it->second;
    const std::vector<int32_t> tokens =
        testing::RandomTokens(length, config.n_vocab, length);
    if (!pool->Reset(0).ok() ||
        !engine->Prefill(*pool, 0, tokens, LogprobRows::kNone, nullptr).ok()) {
      std::abort();
    }
    return contexts[length] = pool->Export(0).value();
  }
};

Fixture& Shared(DType dtype = DType::kF32) {
  static Fixture* f32 = new Fixture(DType::kF32);
  if (dtype == DType::kF32) return *f32;
  static Fixture* bf16 = new Fixture(DType::kBF16);
  return *bf16;
}

// Streaming read bandwidth of this machine (1 GiB, every thread), GB/s.
double MeasureReadBandwidth() {
  static double measured = [] {
    const size_t floats = (size_t{1} << 30) / sizeof(float);
    std::vector<float> buffer(floats, 1.0f);
    const int threads = std::max(1u, std::thread::hardware_concurrency());
    kernels::cpu::ThreadPool pool(threads);
    std::vector<double> sums(threads);
    double best = 0;
    for (int repeat = 0; repeat < 5; ++repeat) {
      const auto start = std::chrono::steady_clock::now();
      pool.ParallelFor(threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const size_t chunk = floats / threads;
          const float* data = buffer.data() + t * chunk;
          float sum = 0;
#pragma omp simd reduction(+ : sum)
          for (size_t i = 0; i < chunk; ++i) sum += data[i];
          sums[t] = sum;
        }
      });
      const double seconds = std::chrono::duration<double>(
                                 std::chrono::steady_clock::now() - start)
                                 .count();
      best = std::max(best, floats * sizeof(float) / seconds / 1e9);
    }
    benchmark::DoNotOptimize(sums);
    return best;
  }();
  return measured;
}

void BM_MemoryReadBandwidth(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(MeasureReadBandwidth());
  state.counters["GB/s"] = MeasureReadBandwidth();
}
BENCHMARK(BM_MemoryReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_Prefill(benchmark::State& state) {
  Fixture& fixture = Shared();
  const int length = static_cast<int>(state.range(0));
  const std::vector<int32_t> tokens =
      testing::RandomTokens(length, fixture.config.n_vocab, 7);
  std::vector<float> logprobs;
  for (auto _ : state) {
    if (!fixture.pool->Reset(0).ok() ||
        !fixture.engine->Prefill(*fixture.pool, 0, tokens, LogprobRows::kLast, &logprobs).ok()) {
      state.SkipWithError("prefill failed");
      return;
    }
  }
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(length) * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Prefill)
    ->Arg(1024)
    ->Arg(8192)
    ->Arg(65536)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const DType dtype = state.range(2) == 16 ? DType::kBF16 : DType::kF32;
  Fixture& fixture = Shared(dtype);
  const int batch = static_cast<int>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  state.SetLabel(dtype == DType::kBF16 ? "bf16" : "f32");
  const std::string& exported = fixture.Context(context);
  std::vector<int> slots(batch);
  std::vector<int32_t> tokens(batch);
  for (int b = 0; b < batch; ++b) {
    slots[b] = b;
    tokens[b] = 3 + b;
    if (!fixture.pool->Import(b, exported).ok()) std::abort();
  }
  std::vector<float> logprobs;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (!fixture.engine->DecodeStep(*fixture.pool, slots, tokens, &logprobs).ok()) {
      state.SkipWithError("decode failed");
      return;
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const double steps = static_cast<double>(state.iterations());
  const double bytes_per_step =
      WeightBytesPerStep(fixture.config, DTypeSize(dtype)) +
      batch * static_cast<double>(fixture.pool->BytesPerSlot());
  const double seconds_per_step =
      std::chrono::duration<double>(elapsed).count() / steps;
  state.counters["tokens/s"] =
      benchmark::Counter(steps * batch, benchmark::Counter::kIsRate);
  state.counters["us/token"] = benchmark::Counter(
      steps * batch * 1e-6,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["MB/step"] = bytes_per_step / 1e6;
  state.counters["GB/s"] = benchmark::Counter(steps * bytes_per_step / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["roofline_GB/s"] = MeasureReadBandwidth();
  // Achieved bytes/s over the roofline measured in the same run.
  state.counters["of_roofline"] =
      bytes_per_step / seconds_per_step / 1e9 / MeasureReadBandwidth();
}
// batch x context x weight/state bits (32 = F32, 16 = BF16). The state is
// the same size at every context (flat in context: docs/perf/cpu.md).
BENCHMARK(BM_Decode)
    ->ArgsProduct({{1, 8, 32, 64}, {1024}, {32, 16}})
    ->ArgsProduct({{1, 8}, {65536}, {32}})
    ->ArgNames({"batch", "context", "bits"})
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The decode GEMMs of one step of the bench model (per sublayer q, kvg and
// res projections, then the output head) for a batch of B rows, with the
// register-blocked kernel (F32 or BF16 weights) or the previous kernel
// (F32), columns split across every core in 64-column blocks as the CPU
// backend does. Counters: GFLOP/s, and the weights' bytes/s against the
// roofline.
void BM_DecodeGemm(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const int kernel = static_cast<int>(state.range(1));  // 0 old, 1 new f32, 2 new bf16
  state.SetLabel(kernel == 0 ? "previous f32" : kernel == 1 ? "new f32" : "new bf16");
  const ModelConfig c = BenchConfig();
  struct Shape { int k, n; };
  std::vector<Shape> shapes;
  for (int i = 0; i < c.num_sublayers(); ++i) {
    shapes.push_back({c.d_model, c.n_head * c.d_k});
    shapes.push_back({c.d_model, c.n_head * (c.d_k + 2 * c.d_v)});
    shapes.push_back({c.n_head * c.d_v, c.d_model});
  }
  shapes.push_back({c.d_model, c.n_vocab});
  std::vector<std::vector<float>> weights;
  std::vector<std::vector<kernels::BFloat16>> weights_bf16;
  double flops = 0, bytes = 0;
  for (const Shape& shape : shapes) {
    weights.emplace_back(static_cast<size_t>(shape.k) * shape.n, 0.01f);
    weights_bf16.emplace_back(weights.back().size());
    kernels::F32ToBF16Array(static_cast<int64_t>(weights.back().size()),
                            weights.back().data(), weights_bf16.back().data());
    flops += 2.0 * batch * shape.k * shape.n;
    bytes += (kernel == 2 ? 2.0 : 4.0) * shape.k * shape.n;
  }
  std::vector<float> a(static_cast<size_t>(batch) * 1024, 0.5f);
  std::vector<float> out(static_cast<size_t>(batch) * 2048);
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  kernels::cpu::ThreadPool pool(threads);
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const int k = shapes[i].k, n = shapes[i].n;
      constexpr int kBlock = kernels::cpu::kSkinnyGemmColumnBlock;
      pool.ParallelFor((n + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
        const int first = static_cast<int>(begin * kBlock);
        const int last = static_cast<int>(std::min<int64_t>(n, end * kBlock));
        if (kernel == 0) {
          bench::LegacySkinnyGemm(false, batch, n, k, a.data(), k, weights[i].data(),
                                  n, 0.0f, out.data(), n, first, last);
        } else {
          kernels::cpu::SkinnyGemm(
              false, batch, n, k, a.data(), k,
              kernel == 2 ? static_cast<const void*>(weights_bf16[i].data())
                          : static_cast<const void*>(weights[i].data()),
              kernel == 2 ? DType::kBF16 : DType::kF32, n, 0.0f, out.data(), n,
              first, last);
        }
      });
    }
    benchmark::DoNotOptimize(out.data());
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
      static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = flops / seconds / 1e9;
  state.counters["weights_GB/s"] = bytes / seconds / 1e9;
  state.counters["of_roofline"] = bytes / seconds / 1e9 / MeasureReadBandwidth();
}
BENCHMARK(BM_DecodeGemm)
    ->ArgsProduct({{1, 8, 32, 64}, {0, 1, 2}})
    ->ArgNames({"batch", "kernel"})
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The weighted sum over the state's values in decode (DecodeWeightedValues:
// S + M = 384 rows of d_v = 512 per head) for 64 sequences x 8 sublayers,
// heads split across every core as the engine does: the previous kernel
// (one Axpy per row, the target read and written per row) against the
// current one (Axpy4: four rows per pass), F32 or BF16 state. Both give the
// same bits (the same multiplies and adds in the same order). Counters: the
// state's bytes/s against the roofline.
template <typename T>
void AccumulateHeads(bool grouped, int64_t head_begin, int64_t head_end,
                     int rows, int dv, const float* weights, const T* state,
                     float* out) {
  for (int64_t h = head_begin; h < head_end; ++h) {
    const T* head = state + h * rows * dv;
    float* target = out + h * dv;
    int r = 0;
    if (grouped) {
      for (; r + 4 <= rows; r += 4) {
        const T* x[4] = {head + (r + 0) * dv, head + (r + 1) * dv,
                         head + (r + 2) * dv, head + (r + 3) * dv};
        kernels::cpu::Axpy4(dv, weights + r, x, target);
      }
    }
    for (; r < rows; ++r) {
      kernels::cpu::Axpy(dv, weights[r], head + static_cast<int64_t>(r) * dv,
                         target);
    }
  }
}

void BM_WeightedValues(benchmark::State& state) {
  const bool grouped = state.range(0) == 1;
  const bool bf16 = state.range(1) == 16;
  state.SetLabel(std::string(grouped ? "Axpy4" : "previous (Axpy per row)") +
                 (bf16 ? " bf16" : " f32"));
  constexpr int kHeads = 64 * 8, kRows = 256 + 128, kDv = 512;
  const size_t values = static_cast<size_t>(kHeads) * kRows * kDv;
  std::vector<float> state_f32;
  std::vector<kernels::BFloat16> state_bf16;
  if (bf16) {
    state_bf16.assign(values, kernels::F32ToBF16(0.25f));
  } else {
    state_f32.assign(values, 0.25f);
  }
  std::vector<float> weights(kRows, 1.0f / kRows);
  std::vector<float> out(static_cast<size_t>(kHeads) * kDv);
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  kernels::cpu::ThreadPool pool(threads);
  for (auto _ : state) {
    std::fill(out.begin(), out.end(), 0.0f);
    pool.ParallelFor(kHeads, 1, [&](int64_t begin, int64_t end) {
      if (bf16) {
        AccumulateHeads(grouped, begin, end, kRows, kDv, weights.data(),
                        state_bf16.data(), out.data());
      } else {
        AccumulateHeads(grouped, begin, end, kRows, kDv, weights.data(),
                        state_f32.data(), out.data());
      }
    });
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = static_cast<double>(values) * (bf16 ? 2 : 4);
  state.counters["GB/s"] = benchmark::Counter(
      bytes * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  state.counters["roofline_GB/s"] = MeasureReadBandwidth();
}
BENCHMARK(BM_WeightedValues)
    ->ArgsProduct({{0, 1}, {32, 16}})
    ->ArgNames({"grouped", "bits"})
    ->MinTime(1.0)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tvq::runtime

BENCHMARK_MAIN();
