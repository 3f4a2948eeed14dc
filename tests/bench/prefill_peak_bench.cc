// Prefill against the machine's sgemm peak, measured in the same run
// (issue 16): OpenBLAS cblas_sgemm on large square matrices (the peak), the
// same sgemm at the prefill's own projection shape, then Transformer-VQ
// prefill of engine_bench's model (d_model 256, d_k 128, d_v 512, 1 head,
// 8 sublayers, S 256, L = M = 128) at 8k tokens (and whatever --lengths
// asks), as FLOP/s and as a fraction of the peak.
//
// FLOPs per prefill token (2 per multiply-add, docs/perf/cpu.md's count):
// per sublayer the projections 2 (D H dk + D H (dk + 2 dv) + H dv D), VQ
// distances and code scores 4 H S dk, window + block scores 4 H (M + L) dk,
// window + block weighted sums 2 H (M + L) dv, code weighted sums and the
// cache update 4 H S dv; the last token's output head 2 D V once.
//
//   prefill_peak_bench [--lengths=8192] [--repeats=3]
#include <algorithm>
#include <chrono>
#include <cblas.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <vector>

#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/engine/transformer_vq.h"
#include "server/text/byte_tokenizer.h"
#include "tests/bench/bench_machine.h"
#include "tests/support/test_util.h"

namespace tvq::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double PrefillFlopsPerToken(const runtime::ModelConfig& c) {
  const double H = c.n_head, D = c.d_model, dk = c.d_k, dv = c.d_v,
               S = c.n_code, M = c.mem_len, L = c.block_len;
  const double per_sublayer =
      2 * (D * H * dk + D * H * (dk + 2 * dv) + H * dv * D) + 4 * H * S * dk +
      4 * H * (M + L) * dk + 2 * H * (M + L) * dv + 4 * H * S * dv;
  return c.num_sublayers() * per_sublayer;
}

// GFLOP/s of cblas_sgemm [m, k] x [k, n], best of `repeats`.
double SgemmRate(int m, int n, int k, int repeats) {
  std::vector<float> a(static_cast<size_t>(m) * k), b(static_cast<size_t>(k) * n),
      c(static_cast<size_t>(m) * n);
  std::mt19937 generator(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& value : a) value = uniform(generator);
  for (float& value : b) value = uniform(generator);
  double best = 0;
  for (int repeat = 0; repeat <= repeats; ++repeat) {
    const auto start = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f,
                a.data(), k, b.data(), n, 0.0f, c.data(), n);
    const double rate = 2.0 * m * n * static_cast<double>(k) / SecondsSince(start) / 1e9;
    if (repeat > 0) best = std::max(best, rate);  // the first is a warm-up
  }
  return best;
}

int Run(const std::vector<int>& lengths, int repeats) {
  const int threads = BenchThreads();
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  std::printf("prefill_peak_bench  %s  %s, %d threads\nload: %s\n\n", date,
              CpuModel().c_str(), threads, MachineLoad().c_str());

  double peak = 0;
  for (const int n : {2048, 4096}) {
    const double rate = SgemmPeakGflops(n, repeats);
    std::printf("sgemm %d^3 (OpenBLAS, best of %d): %.1f GFLOP/s\n", n, repeats, rate);
    peak = std::max(peak, rate);
  }
  const runtime::ModelConfig config = [] {
    runtime::ModelConfig c = testing::SmallConfig(256, 128, 512, 1, 256, 4, 128, 128);
    c.agg_cache = true;
    return c;
  }();
  const int kvg = config.n_head * (config.d_k + 2 * config.d_v);
  std::printf(
      "sgemm at the prefill's kvg projection shape [4096, %d] x [%d, %d]: "
      "%.1f GFLOP/s\n",
      config.d_model, config.d_model, kvg,
      SgemmRate(4096, kvg, config.d_model, repeats));
  std::printf("sgemm peak (best of the square sizes): %.1f GFLOP/s\n\n", peak);

  runtime::LoadedModel model;
  model.weights = testing::RandomModel(config, 42);
  model.tokenizer = std::make_unique<runtime::ByteTokenizer>();
  core::EngineConfig engine_config;
  engine_config.device = "cpu";
  engine_config.threads = threads;
  engine_config.num_slots = 1;
  engine_config.prefill_chunk = 4096;
  absl::StatusOr<core::ModelRuntime> runtime =
      core::BuildModelRuntime(std::move(model), engine_config);
  if (!runtime.ok()) {
    std::printf("engine: %s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  // The output head runs for the last token only.
  const double head_flops = 2.0 * config.d_model * config.n_vocab;
  std::printf("prefill FLOPs: %.2f MFLOP/token\n", PrefillFlopsPerToken(config) / 1e6);
  std::printf("%8s %10s %12s %10s %12s\n", "tokens", "best s", "tokens/s",
              "GFLOP/s", "of peak");
  for (const int length : lengths) {
    const std::vector<int32_t> tokens =
        testing::RandomTokens(length, config.n_vocab, 7);
    std::vector<float> logprobs;
    double best = 0;
    for (int repeat = 0; repeat < repeats; ++repeat) {
      if (!runtime->pool->Reset(0).ok()) return 1;
      const auto start = Clock::now();
      const absl::Status status = runtime->transformer->Prefill(
          *runtime->pool, 0, tokens, runtime::LogprobRows::kLast, &logprobs);
      const double seconds = SecondsSince(start);
      if (!status.ok()) {
        std::printf("prefill: %s\n", std::string(status.message()).c_str());
        return 1;
      }
      best = best == 0 ? seconds : std::min(best, seconds);
    }
    const double rate =
        (PrefillFlopsPerToken(config) * length + head_flops) / best / 1e9;
    std::printf("%8d %10.3f %12.0f %10.1f %11.1f%%\n", length, best, length / best,
                rate, 100 * rate / peak);
  }
  std::printf("\nload at the end: %s\n", MachineLoad().c_str());
  return 0;
}

}  // namespace
}  // namespace tvq::bench

int main(int argc, char** argv) {
  std::vector<int> lengths = {8192};
  int repeats = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--lengths=", 10) == 0) {
      lengths.clear();
      for (const char* p = argv[i] + 10; *p != '\0';) {
        char* end = nullptr;
        const long value = std::strtol(p, &end, 10);
        if (end == p || value < 1) {
          std::fprintf(stderr, "prefill_peak_bench: bad --lengths\n");
          return 2;
        }
        lengths.push_back(static_cast<int>(value));
        p = *end == ',' ? end + 1 : end;
      }
    } else if (std::strncmp(argv[i], "--repeats=", 10) == 0 &&
               std::atoi(argv[i] + 10) > 0) {
      repeats = std::atoi(argv[i] + 10);
    } else {
      std::fprintf(stderr, "usage: %s [--lengths=N,...] [--repeats=N]\n", argv[0]);
      return 2;
    }
  }
  return tvq::bench::Run(lengths, repeats);
}
