// CPU engine benchmark (issue 3): prefill tokens/s at 1k/8k/64k-token
// prompts, decode tokens/s at batch 1/8/32 after 1k/8k/64k tokens of
// context, per-token decode time, achieved bandwidth against the memory
// bandwidth measured in the same run.
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
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/parallel_for.h"
#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "server/model/model_dir.h"
#include "server/text/byte_tokenizer.h"
#include "tests/support/test_util.h"

namespace tvq::runtime {
namespace {

constexpr int kMaxBatch = 32;

ModelConfig BenchConfig() {
  ModelConfig config = testing::SmallConfig(256, 128, 512, 1, 256, 4, 128, 128);
  config.agg_cache = true;
  return config;
}

// Bytes of weights one decode step reads: every sublayer's projections,
// codebook and relative table, the input norm, and the output head.
double WeightBytesPerStep(const ModelConfig& c) {
  const double H = c.n_head, D = c.d_model, dk = c.d_k, dv = c.d_v,
               S = c.n_code, M = c.mem_len, V = c.n_vocab;
  const double per_sublayer = D * H * dk + D * H * (dk + 2 * dv) + H * dv * D +
                              H * S * dk + H * S + H * (M + 1) * dk +
                              2 * H * dk + 2 * D;
  return 4 * (c.num_sublayers() * per_sublayer + D * V + V);
}

// The bench model assembled by the core, as the server does: the CPU
// backend (TVQ_BENCH_THREADS threads; default every core), kMaxBatch slots,
// and prompts fed to the forward pass in chunks of up to 4096 tokens
// (TransformerVq's default chunk; the bench measures whole-prompt prefill).
core::ModelRuntime BenchRuntime(const ModelConfig& config) {
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
  return core::BuildModelRuntime(std::move(model), engine_config).value();
}

struct Fixture {
  ModelConfig config = BenchConfig();
  core::ModelRuntime runtime = BenchRuntime(config);
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

Fixture& Shared() {
  static Fixture* fixture = new Fixture();
  return *fixture;
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
  Fixture& fixture = Shared();
  const int batch = static_cast<int>(state.range(0));
  const int context = static_cast<int>(state.range(1));
  const std::string& exported = fixture.Context(context);
  std::vector<int> slots(batch);
  std::vector<int32_t> tokens(batch);
  for (int b = 0; b < batch; ++b) {
    slots[b] = b;
    tokens[b] = 3 + b;
    if (!fixture.pool->Import(b, exported).ok()) std::abort();
  }
  std::vector<float> logprobs;
  for (auto _ : state) {
    if (!fixture.engine->DecodeStep(*fixture.pool, slots, tokens, &logprobs).ok()) {
      state.SkipWithError("decode failed");
      return;
    }
  }
  const double steps = static_cast<double>(state.iterations());
  const double bytes_per_step =
      WeightBytesPerStep(fixture.config) +
      batch * static_cast<double>(StatePool::BytesPerSlotFor(fixture.config));
  state.counters["tokens/s"] =
      benchmark::Counter(steps * batch, benchmark::Counter::kIsRate);
  state.counters["us/token"] = benchmark::Counter(
      steps * batch * 1e-6,
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["MB/step"] = bytes_per_step / 1e6;
  state.counters["GB/s"] = benchmark::Counter(steps * bytes_per_step / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["roofline_GB/s"] = MeasureReadBandwidth();
}
BENCHMARK(BM_Decode)
    ->ArgsProduct({{1, 8, 32}, {1024, 8192, 65536}})
    ->ArgNames({"batch", "context"})
    ->MinTime(2.0)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tvq::runtime

BENCHMARK_MAIN();
