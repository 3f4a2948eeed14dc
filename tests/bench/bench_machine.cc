#include "tests/bench/bench_machine.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel_for.h"

namespace tvq::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

double ReadBandwidthGBs(int threads, int repeats) {
  const size_t floats = (size_t{1} << 30) / sizeof(float);
  std::vector<float> buffer(floats, 1.0f);
  kernels::cpu::ThreadPool pool(threads);
  std::vector<double> sums(threads);
  double best = 0;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const auto start = Clock::now();
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
    best = std::max(best, floats * sizeof(float) / SecondsSince(start) / 1e9);
  }
  // Keep the sums observable so that the reads are not optimized away.
  volatile double sink = 0;
  for (double s : sums) sink = sink + s;
  return best;
}

double SgemmPeakGflops(int n, int repeats) {
  const size_t elements = static_cast<size_t>(n) * n;
  std::vector<float> a(elements), b(elements), c(elements);
  std::mt19937 generator(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& value : a) value = uniform(generator);
  for (float& value : b) value = uniform(generator);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f,
                a.data(), n, b.data(), n, 0.0f, c.data(), n);
  };
  run();  // warm-up: thread start, page faults
  double best = 0;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const auto start = Clock::now();
    run();
    best = std::max(best, 2.0 * n * static_cast<double>(n) * n /
                              SecondsSince(start) / 1e9);
  }
  return best;
}

std::string MachineLoad() {
  std::string line;
  if (FILE* pipe = popen("uptime", "r")) {
    char buffer[256];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) line += buffer;
    pclose(pipe);
  }
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) {
    line.pop_back();
  }
  return line.empty() ? "uptime unavailable" : line;
}

std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

int BenchThreads() {
  const char* threads = std::getenv("TVQ_BENCH_THREADS");
  if (threads != nullptr && std::atoi(threads) > 0) return std::atoi(threads);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace tvq::bench
