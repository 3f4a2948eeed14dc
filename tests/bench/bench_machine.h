// What the machine itself can do, measured in the same run as a benchmark:
// streaming read bandwidth and the BLAS sgemm rate on large square
// matrices. The ceilings the benchmarks' figures are divided by.
#ifndef TVQ_TESTS_BENCH_BENCH_MACHINE_H_
#define TVQ_TESTS_BENCH_BENCH_MACHINE_H_

#include <string>

namespace tvq::bench {

// Best of `repeats` streaming reads of 1 GiB split over `threads` threads,
// in GB/s.
double ReadBandwidthGBs(int threads, int repeats = 5);

// Best of `repeats` cblas_sgemm calls on n x n x n fp32 matrices (random
// inputs, BLAS's own threads), in GFLOP/s (2 n^3 per call).
double SgemmPeakGflops(int n, int repeats = 3);

// The `uptime` line and the machine's CPU model, for the record.
std::string MachineLoad();
std::string CpuModel();

// Threads the benchmarks use: TVQ_BENCH_THREADS, else every core.
int BenchThreads();

}  // namespace tvq::bench

#endif  // TVQ_TESTS_BENCH_BENCH_MACHINE_H_
