// Transformer-VQ against the quadratic baseline (issue 16): the same widths,
// the same sublayer structure, the same backend ops and GEMMs, the same
// random weights (tests/bench/quadratic), so the figures isolate the
// attention algorithm. For each context it prints, side by side:
//   - decode time per token at batch 1 and 8 (median step over several
//     steps after warm-up), and the ratio of the two engines' tokens/s;
//   - prefill tokens/s of one prompt of that length, and its ratio;
//   - the memory per sequence of each (Transformer-VQ's state, constant;
//     the baseline's KV cache, linear in the context);
// plus the machine's read bandwidth (the baseline's decode reads its whole
// cache every step, so it should run near it) and the load (uptime).
//
// Model: engine_bench's (d_model 256, d_k 128, d_v 512, 1 head, 4 layers =
// 8 attention sublayers, S 256, L = M = 128, byte vocabulary), fp32.
// The Transformer-VQ context is a real prefill; the baseline's decode
// context is synthesized (random keys and values: its decode time does not
// depend on them), its prefill is real.
//
//   quadratic_bench [--contexts=1024,4096,16384,65536,131072]
//                   [--batches=1,8] [--prefill-max=65536] [--steps=N]
//                   [--no-quadratic] [--quick]
// --quick: contexts 1024 and 4096, 3 steps (a smoke run). --prefill-max:
// the longest prompt the baseline prefills (its prefill is quadratic: about
// 4x the time per doubling). --no-quadratic: Transformer-VQ alone (for
// tests/bench/llama_cpp/compare_llama_cpp.py). The last lines, "result
// engine=... context=... ...", repeat the figures for scripts.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "server/core/engine_config.h"
#include "server/core/model_runtime.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "server/text/byte_tokenizer.h"
#include "tests/bench/bench_machine.h"
#include "tests/bench/quadratic/quadratic_transformer.h"
#include "tests/support/test_util.h"

namespace tvq::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Flags {
  std::vector<int64_t> contexts = {1024, 4096, 16384, 65536, 131072};
  std::vector<int> batches = {1, 8};
  int64_t prefill_max = 65536;
  int steps = 0;  // 0: as many as fit in about 2 s (at least 3)
  bool quadratic = true;  // --no-quadratic: Transformer-VQ alone
};

std::vector<int64_t> ParseList(const char* text) {
  std::vector<int64_t> values;
  for (const char* p = text; *p != '\0';) {
    char* end = nullptr;
    const long long value = std::strtoll(p, &end, 10);
    if (end == p || value < 1) {
      std::fprintf(stderr, "quadratic_bench: bad number list \"%s\"\n", text);
      std::exit(2);
    }
    values.push_back(value);
    p = *end == ',' ? end + 1 : end;
  }
  return values;
}

runtime::ModelConfig BenchConfig() {
  runtime::ModelConfig config =
      testing::SmallConfig(256, 128, 512, 1, 256, 4, 128, 128);
  config.agg_cache = true;
  return config;
}

// Bytes of weights one decode step reads (engine_bench's formula), with or
// without the Transformer-VQ tables (codebook, |c|^2, relative table, u, v).
double WeightBytesPerStep(const runtime::ModelConfig& c, bool vq_tables) {
  const double H = c.n_head, D = c.d_model, dk = c.d_k, dv = c.d_v,
               S = c.n_code, M = c.mem_len, V = c.n_vocab;
  double per_sublayer =
      D * H * dk + D * H * (dk + 2 * dv) + H * dv * D + 2 * D;
  if (vq_tables) per_sublayer += H * S * dk + H * S + H * (M + 1) * dk + 2 * H * dk;
  return 4 * (c.num_sublayers() * per_sublayer + D * V + V);
}

double AvailableBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kilobytes = 0;
  while (meminfo >> key >> kilobytes) {
    if (key == "MemAvailable:") return kilobytes * 1024;
    meminfo.ignore(256, '\n');
  }
  return 0;
}

// Median seconds per decode step over `steps` steps after 2 warm-ups; 0 on
// failure (printed). With steps = 0, as many as fit in ~2 s (3 to 200).
template <typename Step>
double MedianStep(int steps, Step step) {
  std::vector<double> times;
  const auto begin = Clock::now();
  for (int i = 0;; ++i) {
    const auto start = Clock::now();
    if (!step()) return 0;
    if (i >= 2) times.push_back(SecondsSince(start));
    const int done = static_cast<int>(times.size());
    if (steps > 0 ? done >= steps
                  : (done >= 3 && (SecondsSince(begin) > 2.0 || done >= 200))) {
      break;
    }
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Row {
  int64_t context = 0;
  std::vector<double> vq_step, quadratic_step;  // per batch; 0 = not run
  double vq_prefill = 0, quadratic_prefill = 0;  // seconds; 0 = not run
};

std::string Cell(double value, const char* format) {
  if (value <= 0) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

int Run(const Flags& flags) {
  const int threads = BenchThreads();
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  std::printf("quadratic_bench  %s  %s, %d threads\nload: %s\n", date,
              CpuModel().c_str(), threads, MachineLoad().c_str());
  const double bandwidth = ReadBandwidthGBs(threads);
  std::printf("read bandwidth (1 GiB, best of 5): %.1f GB/s\n", bandwidth);

  const runtime::ModelConfig config = BenchConfig();
  const int max_batch =
      *std::max_element(flags.batches.begin(), flags.batches.end());
  runtime::LoadedModel model;
  model.weights = testing::RandomModel(config, 42);
  model.tokenizer = std::make_unique<runtime::ByteTokenizer>();
  const runtime::ModelWeights& weights = *model.weights;
  core::EngineConfig engine_config;
  engine_config.device = "cpu";
  engine_config.threads = threads;
  engine_config.num_slots = max_batch;
  engine_config.prefill_chunk = 4096;
  absl::StatusOr<core::ModelRuntime> built =
      core::BuildModelRuntime(std::move(model), engine_config);
  if (!built.ok()) {
    std::printf("engine: %s\n", std::string(built.status().message()).c_str());
    return 1;
  }
  core::ModelRuntime& runtime = *built;
  runtime::Backend& backend = *runtime.backend;
  const double state_bytes =
      static_cast<double>(runtime::StatePool::BytesPerSlotFor(config));
  const double kv_per_token =
      static_cast<double>(QuadraticTransformer::CacheBytesPerToken(config));
  std::printf(
      "model: d_model %d, d_k %d, d_v %d, %d head, %d sublayers, S %d, "
      "L = M = %d, vocab %d, fp32, random weights (the same in both)\n"
      "Transformer-VQ state per sequence: %.2f MB at every context; "
      "quadratic KV cache: %.1f KB per token\n\n",
      config.d_model, config.d_k, config.d_v, config.n_head,
      config.num_sublayers(), config.n_code, config.mem_len, config.n_vocab,
      state_bytes / 1e6, kv_per_token / 1e3);

  std::vector<Row> rows;
  for (const int64_t context : flags.contexts) {
    Row row;
    row.context = context;
    // ---- Transformer-VQ: prefill `context` tokens (timed), then decode.
    const std::vector<int32_t> prompt =
        testing::RandomTokens(static_cast<int>(context), config.n_vocab, 7);
    std::string exported;
    {
      if (!runtime.pool->Reset(0).ok()) return 1;
      std::vector<float> logprobs;
      const auto start = Clock::now();
      const absl::Status status = runtime.transformer->Prefill(
          *runtime.pool, 0, prompt, runtime::LogprobRows::kLast, &logprobs);
      row.vq_prefill = SecondsSince(start);
      if (!status.ok()) {
        std::printf("tvq prefill %lld: %s\n", static_cast<long long>(context),
                    std::string(status.message()).c_str());
        return 1;
      }
      exported = runtime.pool->Export(0).value();
    }
    for (const int batch : flags.batches) {
      std::vector<int> slots(batch);
      std::vector<int32_t> tokens(batch);
      for (int b = 0; b < batch; ++b) {
        slots[b] = b;
        tokens[b] = 3 + b;
        if (!runtime.pool->Import(b, exported).ok()) return 1;
      }
      std::vector<float> logprobs;
      row.vq_step.push_back(MedianStep(flags.steps, [&] {
        const absl::Status status = runtime.transformer->DecodeStep(
            *runtime.pool, slots, tokens, &logprobs);
        if (!status.ok()) {
          std::printf("tvq decode: %s\n", std::string(status.message()).c_str());
        }
        return status.ok();
      }));
    }
    // ---- the quadratic baseline: decode over a synthesized cache.
    for (const int batch : flags.batches) {
      if (!flags.quadratic) {
        row.quadratic_step.push_back(0);
        continue;
      }
      const int64_t capacity = context + 256;
      const double need = batch * capacity * kv_per_token;
      if (need > 0.7 * AvailableBytes()) {
        std::printf(
            "quadratic decode B=%d at %lld: skipped, the KV caches need %.1f "
            "GB and %.1f GB are available\n",
            batch, static_cast<long long>(context), need / 1e9,
            AvailableBytes() / 1e9);
        row.quadratic_step.push_back(0);
        continue;
      }
      absl::StatusOr<std::unique_ptr<QuadraticTransformer>> quadratic =
          QuadraticTransformer::Create(
              weights, backend,
              {.num_slots = batch, .max_context = capacity, .threads = threads});
      if (!quadratic.ok() ||
          !(*quadratic)->SynthesizeContext(0, context, 11).ok()) {
        std::printf("quadratic decode B=%d at %lld: %s\n", batch,
                    static_cast<long long>(context),
                    quadratic.ok() ? "could not write the cache"
                                   : std::string(quadratic.status().message()).c_str());
        row.quadratic_step.push_back(0);
        continue;
      }
      for (int b = 1; b < batch; ++b) {
        if (!(*quadratic)->CopySlot(0, b).ok()) return 1;
      }
      std::vector<int> slots(batch);
      std::vector<int32_t> tokens(batch);
      for (int b = 0; b < batch; ++b) {
        slots[b] = b;
        tokens[b] = 3 + b;
      }
      std::vector<float> logprobs;
      // Each step appends one token: rewind so every step sees `context`.
      row.quadratic_step.push_back(MedianStep(flags.steps, [&] {
        absl::Status status;
        for (int b = 0; b < batch && status.ok(); ++b) {
          status = (*quadratic)->Truncate(b, context);
        }
        if (status.ok()) status = (*quadratic)->DecodeStep(slots, tokens, &logprobs);
        if (!status.ok()) {
          std::printf("quadratic decode: %s\n",
                      std::string(status.message()).c_str());
        }
        return status.ok();
      }));
    }
    // ---- the quadratic baseline: a real prefill of the prompt.
    if (flags.quadratic && context <= flags.prefill_max &&
        context * kv_per_token < 0.7 * AvailableBytes()) {
      absl::StatusOr<std::unique_ptr<QuadraticTransformer>> quadratic =
          QuadraticTransformer::Create(
              weights, backend, {.max_context = context, .threads = threads});
      if (quadratic.ok()) {
        std::vector<float> logprobs;
        const auto start = Clock::now();
        const absl::Status status =
            (*quadratic)->Prefill(0, prompt, true, &logprobs);
        row.quadratic_prefill = status.ok() ? SecondsSince(start) : 0;
        if (!status.ok()) {
          std::printf("quadratic prefill: %s\n",
                      std::string(status.message()).c_str());
        }
      }
    }
    rows.push_back(row);
    // One line per context as it finishes (the table follows at the end).
    std::printf("context %lld done (tvq prefill %.2f s, quadratic prefill %s s)"
                "  load: %s\n",
                static_cast<long long>(context), row.vq_prefill,
                Cell(row.quadratic_prefill, "%.2f").c_str(),
                MachineLoad().c_str());
    std::fflush(stdout);
  }

  // ---- the tables
  const double vq_weights = WeightBytesPerStep(config, true),
               quadratic_weights = WeightBytesPerStep(config, false);
  std::printf(
      "\ndecode: time per token (step time / batch), tokens/s ratio "
      "tvq/quadratic, the baseline's achieved read rate (weights + batch x "
      "cache bytes per step / step time)\n");
  std::printf("%8s %6s %13s %13s %9s %13s %14s\n", "context", "batch",
              "tvq us/token", "quad us/token", "tvq/quad", "quad GB/s",
              "of read BW");
  for (const Row& row : rows) {
    for (size_t i = 0; i < flags.batches.size(); ++i) {
      const int batch = flags.batches[i];
      const double vq = row.vq_step[i], quad = row.quadratic_step[i];
      const double quad_bytes =
          quadratic_weights + batch * row.context * kv_per_token;
      std::printf("%8lld %6d %13s %13s %9s %13s %14s\n",
                  static_cast<long long>(row.context), batch,
                  Cell(vq * 1e6 / batch, "%.1f").c_str(),
                  Cell(quad * 1e6 / batch, "%.1f").c_str(),
                  Cell(vq > 0 ? quad / vq : 0, "%.2fx").c_str(),
                  Cell(quad > 0 ? quad_bytes / quad / 1e9 : 0, "%.1f").c_str(),
                  Cell(quad > 0 ? 100 * quad_bytes / quad / 1e9 / bandwidth : 0,
                       "%.0f%%")
                      .c_str());
    }
  }
  std::printf("\nprefill: one prompt of `context` tokens, batch 1 (both engines "
              "prefill one sequence at a time)\n");
  std::printf("%8s %14s %14s %9s %16s %16s\n", "context", "tvq tokens/s",
              "quad tokens/s", "tvq/quad", "tvq state MB", "quad KV MB");
  for (const Row& row : rows) {
    const double vq = row.vq_prefill > 0 ? row.context / row.vq_prefill : 0;
    const double quad =
        row.quadratic_prefill > 0 ? row.context / row.quadratic_prefill : 0;
    std::printf("%8lld %14s %14s %9s %16.2f %16.1f\n",
                static_cast<long long>(row.context), Cell(vq, "%.0f").c_str(),
                Cell(quad, "%.0f").c_str(),
                Cell(quad > 0 ? vq / quad : 0, "%.2fx").c_str(),
                state_bytes / 1e6, row.context * kv_per_token / 1e6);
  }
  std::printf("(weights read per decode step: tvq %.1f MB, quadratic %.1f MB)\n"
              "load at the end: %s\n",
              vq_weights / 1e6, quadratic_weights / 1e6, MachineLoad().c_str());
  // Machine-readable lines for scripts (tests/bench/llama_cpp); 0 = not run.
  for (const Row& row : rows) {
    for (size_t i = 0; i < flags.batches.size(); ++i) {
      std::printf("result engine=tvq context=%lld batch=%d us_per_token=%.3f\n",
                  static_cast<long long>(row.context), flags.batches[i],
                  row.vq_step[i] * 1e6 / flags.batches[i]);
      std::printf(
          "result engine=quadratic context=%lld batch=%d us_per_token=%.3f\n",
          static_cast<long long>(row.context), flags.batches[i],
          row.quadratic_step[i] * 1e6 / flags.batches[i]);
    }
    std::printf("result engine=tvq context=%lld prefill_tokens_per_s=%.1f\n",
                static_cast<long long>(row.context),
                row.vq_prefill > 0 ? row.context / row.vq_prefill : 0);
    std::printf(
        "result engine=quadratic context=%lld prefill_tokens_per_s=%.1f\n",
        static_cast<long long>(row.context),
        row.quadratic_prefill > 0 ? row.context / row.quadratic_prefill : 0);
  }
  return 0;
}

}  // namespace
}  // namespace tvq::bench

int main(int argc, char** argv) {
  tvq::bench::Flags flags;
  for (int i = 1; i < argc; ++i) {
    const char* arg = argv[i];
    if (std::strncmp(arg, "--contexts=", 11) == 0) {
      flags.contexts = tvq::bench::ParseList(arg + 11);
    } else if (std::strncmp(arg, "--batches=", 10) == 0) {
      flags.batches.clear();
      for (const int64_t batch : tvq::bench::ParseList(arg + 10)) {
        flags.batches.push_back(static_cast<int>(batch));
      }
    } else if (std::strncmp(arg, "--prefill-max=", 14) == 0) {
      flags.prefill_max = std::atoll(arg + 14);
    } else if (std::strncmp(arg, "--steps=", 8) == 0) {
      flags.steps = std::atoi(arg + 8);
    } else if (std::strcmp(arg, "--no-quadratic") == 0) {
      flags.quadratic = false;
    } else if (std::strcmp(arg, "--quick") == 0) {
      flags.contexts = {1024, 4096};
      flags.steps = 3;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--contexts=N,...] [--batches=N,...] "
                   "[--prefill-max=N] [--steps=N] [--no-quadratic] [--quick]\n",
                   argv[0]);
      return 2;
    }
  }
  return tvq::bench::Run(flags);
}
