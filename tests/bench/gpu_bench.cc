// GPU benchmark (issue 7). In one run it measures the device's copy
// bandwidth and its bf16 GEMM rate (and, for reference, its fp32 GEMM
// rate), then, for the enwik8-size model with random weights (d_model 768,
// d_k 128, d_v 1536, 1 head, 24 layers = 48 attention sublayers,
// S = L = M = 512, vocab 259):
//   - decode tokens/s at batch 1, 8, 64, 256 after 1k, 8k and 64k tokens of
//     context, each as a fraction of the bandwidth roofline
//     (weights read per step + batch x state bytes) / copy bandwidth;
//   - prefill tokens/s for 8 prompts of 8192 tokens, as a fraction of the
//     measured bf16 and fp32 GEMM rates.
// Weights and state are fp32 (what the CUDA backend implements today).
// Without a usable GPU it prints why and exits 0.
//
//   build/tests/bench/gpu_bench [--quick]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "server/backend/cuda/cuda_backend.h"
#include "server/engine/state_pool.h"
#include "server/engine/transformer_vq.h"
#include "tests/support/test_util.h"

namespace tvq::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point begin, Clock::time_point end) {
  return std::chrono::duration<double>(end - begin).count();
}

bool Check(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return true;
  std::printf("  %s failed: %s (%s)\n", what, cudaGetErrorName(error),
              cudaGetErrorString(error));
  return false;
}

bool Check(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return true;
  std::printf("  %s failed: %s\n", what, cublasGetStatusName(status));
  return false;
}

// Device-to-device copy rate, counting bytes read plus bytes written.
double CopyBandwidth(size_t bytes, int repeats) {
  void* source = nullptr;
  void* target = nullptr;
  if (!Check(cudaMalloc(&source, bytes), "cudaMalloc") ||
      !Check(cudaMalloc(&target, bytes), "cudaMalloc")) {
    cudaFree(source);
    return 0;
  }
  cudaMemset(source, 1, bytes);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaMemcpy(target, source, bytes, cudaMemcpyDeviceToDevice);  // warm-up
  cudaEventRecord(start);
  for (int i = 0; i < repeats; ++i) {
    cudaMemcpyAsync(target, source, bytes, cudaMemcpyDeviceToDevice);
  }
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float milliseconds = 0;
  cudaEventElapsedTime(&milliseconds, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(source);
  cudaFree(target);
  return 2.0 * bytes * repeats / (milliseconds * 1e-3);
}

// FLOP/s of an n x n x n GEMM: bf16 inputs and output with fp32
// accumulation, or fp32 throughout (pedantic: no TF32).
double GemmRate(int n, bool bf16, int repeats) {
  const size_t element = bf16 ? 2 : 4;
  const size_t bytes = static_cast<size_t>(n) * n * element;
  void* a = nullptr;
  void* b = nullptr;
  void* c = nullptr;
  cublasHandle_t handle = nullptr;
  double rate = 0;
  if (Check(cudaMalloc(&a, bytes), "cudaMalloc") &&
      Check(cudaMalloc(&b, bytes), "cudaMalloc") &&
      Check(cudaMalloc(&c, bytes), "cudaMalloc") &&
      Check(cublasCreate(&handle), "cublasCreate")) {
    cudaMemset(a, 0, bytes);
    cudaMemset(b, 0, bytes);
    const float alpha = 1, beta = 0;
    const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute =
        bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_PEDANTIC;
    auto run = [&] {
      return cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a,
                          type, n, b, type, n, &beta, c, type, n, compute,
                          CUBLAS_GEMM_DEFAULT);
    };
    if (Check(run(), "cublasGemmEx")) {
      cudaDeviceSynchronize();
      cudaEvent_t start, stop;
      cudaEventCreate(&start);
      cudaEventCreate(&stop);
      cudaEventRecord(start);
      for (int i = 0; i < repeats; ++i) run();
      cudaEventRecord(stop);
      cudaEventSynchronize(stop);
      float milliseconds = 0;
      cudaEventElapsedTime(&milliseconds, start, stop);
      rate = 2.0 * n * static_cast<double>(n) * n * repeats /
             (milliseconds * 1e-3);
      cudaEventDestroy(start);
      cudaEventDestroy(stop);
    }
  }
  if (handle != nullptr) cublasDestroy(handle);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return rate;
}

ModelConfig Enwik8Config() {
  ModelConfig config =
      testing::SmallConfig(768, 128, 1536, 1, 512, 24, 512, 512);
  config.agg_cache = true;
  return config;
}

// Bytes of weights one decode step reads (fp32): every sublayer's
// projections, norm, codebook, |c|^2, relative table and u, v; the output
// head; the embedding rows.
double WeightBytesPerStep(const ModelConfig& c, int batch) {
  const double H = c.n_head, D = c.d_model, dk = c.d_k, dv = c.d_v,
               S = c.n_code, M = c.mem_len, V = c.n_vocab;
  const double per_sublayer = D * H * dk + D * H * (dk + 2 * dv) + H * dv * D +
                              2 * D + H * S * dk + H * S + H * (M + 1) * dk +
                              2 * H * dk;
  return 4 * (c.num_sublayers() * per_sublayer + D * V + V + batch * D);
}

// FLOPs per prefill token of this implementation (dense): projections, VQ,
// code and relative scores, and the weighted sums over window + block + codes.
double PrefillFlopsPerToken(const ModelConfig& c) {
  const double H = c.n_head, D = c.d_model, dk = c.d_k, dv = c.d_v,
               S = c.n_code, M = c.mem_len, L = c.block_len;
  const double per_sublayer =
      2 * (D * H * dk + D * H * (dk + 2 * dv) + H * dv * D) + 2 * H * S * dk +
      2 * H * S * dk + 2 * H * (M + 1) * dk + 2 * H * (M + L + S) * dv;
  return c.num_sublayers() * per_sublayer;
}

// Writes into slot 0 of every sublayer a state as after `context` tokens:
// a full window of random codes and values, context - M evicted tokens
// spread at random over the codes, random means; then copies slot 0 to the
// other slots and sets every position to `context`.
bool SynthesizeState(const ModelConfig& c, Backend& backend, StatePool& pool,
                     int64_t context, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(0, c.n_code - 1);
  const size_t H = c.n_head, S = c.n_code, M = c.mem_len, dv = c.d_v;
  std::vector<float> counts(H * S), means(H * S * dv), values(H * M * dv);
  std::vector<int32_t> window(H * M);
  for (int sublayer = 0; sublayer < c.num_sublayers(); ++sublayer) {
    std::fill(counts.begin(), counts.end(), 0.0f);
    const int64_t evicted = std::max<int64_t>(0, context - c.mem_len);
    for (size_t h = 0; h < H; ++h) {
      for (int64_t e = 0; e < evicted; ++e)
        counts[h * S + code(generator)] += 1;
    }
    for (float& value : means) value = normal(generator);
    for (float& value : values) value = normal(generator);
    for (int32_t& value : window) value = code(generator);
    const SublayerState state = pool.Sublayer(sublayer);
    if (!backend.CopyToDevice(state.counts, counts.data(), 4 * counts.size())
             .ok() ||
        !backend.CopyToDevice(state.means, means.data(), 4 * means.size())
             .ok() ||
        !backend
             .CopyToDevice(state.window_codes, window.data(), 4 * window.size())
             .ok() ||
        !backend
             .CopyToDevice(state.window_values, values.data(),
                           4 * values.size())
             .ok()) {
      return false;
    }
  }
  pool.set_position(0, context);
  for (int slot = 1; slot < pool.num_slots(); ++slot) {
    if (!pool.Copy(0, slot).ok()) return false;
  }
  return true;
}

int Run(bool quick) {
  absl::StatusOr<std::unique_ptr<CudaBackend>> created = CudaBackend::Create(0);
  if (!created.ok()) {
    std::printf("gpu_bench: no usable GPU, nothing measured: %s\n",
                std::string(created.status().message()).c_str());
    return 0;
  }
  CudaBackend& backend = **created;
  const std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  std::printf("gpu_bench  %s  device %s\n\n", date,
              backend.DeviceName().c_str());

  const double bandwidth = CopyBandwidth(size_t{1} << 31, quick ? 5 : 20);
  const double bf16_rate = GemmRate(8192, true, quick ? 5 : 20);
  const double fp32_rate = GemmRate(8192, false, quick ? 2 : 5);
  std::printf("copy bandwidth (device to device, read + write): %.1f GB/s\n",
              bandwidth / 1e9);
  std::printf("bf16 GEMM 8192^3, fp32 accumulation:            %.1f TFLOP/s\n",
              bf16_rate / 1e12);
  std::printf(
      "fp32 GEMM 8192^3, pedantic (no TF32):           %.1f TFLOP/s\n\n",
      fp32_rate / 1e12);
  if (bandwidth <= 0 || bf16_rate <= 0) return 1;

  const ModelConfig config = Enwik8Config();
  std::printf("model: enwik8-size, random weights (fp32), %d sublayers\n",
              config.num_sublayers());
  const auto weights = testing::RandomModel(config, 42);
  absl::StatusOr<std::unique_ptr<TransformerVq>> engine =
      TransformerVq::Create(*weights, backend, {.max_prefill_chunk = 8192});
  if (!engine.ok()) {
    std::printf("engine: %s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  const double state_bytes =
      static_cast<double>(StatePool::BytesPerSlotFor(config));
  std::printf(
      "weights read per decode step: %.1f MB; state per sequence: %.1f MB\n\n",
      WeightBytesPerStep(config, 0) / 1e6, state_bytes / 1e6);

  // ---- decode
  std::printf(
      "decode  batch  context  p50 ms/step  max ms/step  tokens/s  "
      "roofline tokens/s  fraction  achieved GB/s\n");
  const int steps = quick ? 8 : 30;
  for (const int batch : {1, 8, 64, 256}) {
    absl::StatusOr<std::unique_ptr<StatePool>> pool =
        StatePool::Create(config, backend, batch);
    if (!pool.ok()) {
      std::printf("decode  %5d  state pool of %.1f GB does not fit: %s\n",
                  batch, state_bytes * batch / 1e9,
                  std::string(pool.status().message()).c_str());
      continue;
    }
    std::vector<int> slots(batch);
    for (int b = 0; b < batch; ++b) slots[b] = b;
    for (const int64_t context :
         {int64_t{1024}, int64_t{8192}, int64_t{65536}}) {
      if (!SynthesizeState(config, backend, **pool, context, 7)) {
        std::printf("decode  %5d  %7lld  could not write the state\n", batch,
                    static_cast<long long>(context));
        continue;
      }
      std::mt19937 generator(static_cast<uint32_t>(batch + context));
      std::uniform_int_distribution<int32_t> token(3, config.n_vocab - 1);
      std::vector<int32_t> tokens(batch);
      std::vector<float> logprobs;
      std::vector<double> times;
      bool failed = false;
      for (int step = 0; step < steps + 3 && !failed; ++step) {
        for (int32_t& t : tokens) t = token(generator);
        const Clock::time_point begin = Clock::now();
        const absl::Status status =
            (*engine)->DecodeStep(**pool, slots, tokens, &logprobs);
        const Clock::time_point end = Clock::now();
        if (!status.ok()) {
          std::printf("decode  %5d  %7lld  failed: %s\n", batch,
                      static_cast<long long>(context),
                      std::string(status.message()).c_str());
          failed = true;
        }
        if (step >= 3) times.push_back(Seconds(begin, end));  // 3 warm-up steps
      }
      if (failed || times.empty()) continue;
      std::sort(times.begin(), times.end());
      const double p50 = times[times.size() / 2], worst = times.back();
      const double bytes =
          WeightBytesPerStep(config, batch) + batch * state_bytes;
      const double roofline = batch / (bytes / bandwidth);
      const double tokens_per_second = batch / p50;
      std::printf(
          "decode  %5d  %7lld  %11.3f  %11.3f  %8.0f  %17.0f  %7.1f%%  "
          "%13.0f\n",
          batch, static_cast<long long>(context), p50 * 1e3, worst * 1e3,
          tokens_per_second, roofline, 100 * tokens_per_second / roofline,
          bytes / p50 / 1e9);
    }
  }

  // ---- prefill: 8 prompts of 8192 tokens, one after the other.
  const int prompts = 8, length = quick ? 2048 : 8192;
  absl::StatusOr<std::unique_ptr<StatePool>> pool =
      StatePool::Create(config, backend, prompts);
  if (!pool.ok()) {
    std::printf("prefill: %s\n", std::string(pool.status().message()).c_str());
    return 1;
  }
  {
    const std::vector<int32_t> warm =
        testing::RandomTokens(600, config.n_vocab, 1);
    std::vector<float> logprobs;
    if (!(*engine)
             ->Prefill(**pool, 0, warm, LogprobRows::kLast, &logprobs)
             .ok() ||
        !(*pool)->Reset(0).ok()) {
      std::printf("prefill warm-up failed\n");
      return 1;
    }
  }
  std::vector<std::vector<int32_t>> inputs;
  for (int p = 0; p < prompts; ++p) {
    inputs.push_back(testing::RandomTokens(length, config.n_vocab, 100 + p));
  }
  std::vector<float> logprobs;
  const Clock::time_point begin = Clock::now();
  for (int p = 0; p < prompts; ++p) {
    const absl::Status status =
        (*engine)->Prefill(**pool, p, inputs[p], LogprobRows::kLast, &logprobs);
    if (!status.ok()) {
      std::printf("prefill failed: %s\n",
                  std::string(status.message()).c_str());
      return 1;
    }
  }
  if (!backend.Synchronize().ok()) return 1;
  const double seconds = Seconds(begin, Clock::now());
  const double tokens_per_second =
      prompts * static_cast<double>(length) / seconds;
  const double flops = PrefillFlopsPerToken(config);
  std::printf(
      "\nprefill %d x %d tokens: %.3f s, %.0f tokens/s, %.1f MFLOP/token, "
      "%.1f TFLOP/s = %.1f%% of the bf16 GEMM rate, %.1f%% of the fp32 rate\n",
      prompts, length, seconds, tokens_per_second, flops / 1e6,
      tokens_per_second * flops / 1e12,
      100 * tokens_per_second * flops / bf16_rate,
      100 * tokens_per_second * flops / fp32_rate);
  return 0;
}

}  // namespace
}  // namespace tvq::runtime

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  return tvq::runtime::Run(quick);
}
