// The row softmax of the quadratic baseline's attention (CPU). Plain C++:
// no Abseil, like kernels/cpu, so that it can move there if the baseline
// ever becomes a backend op.
#ifndef TVQ_TESTS_BENCH_QUADRATIC_SOFTMAX_ROWS_H_
#define TVQ_TESTS_BENCH_QUADRATIC_SOFTMAX_ROWS_H_

#include <cstdint>

namespace tvq::bench {

// e^x in float for x <= 0 (the shifted scores of a softmax): Cody-Waite
// reduction to r in [-ln2/2, ln2/2] and a degree-7 Taylor polynomial;
// relative error under 1e-6 against std::exp on [-87, 0], 0 below -87.
// Branch-free, so that loops over it vectorize.
float ExpNonPositive(float x);

// In place on one row of `total` scores: the first `valid` entries become
// softmax(row[0 .. valid)) (max-shifted, sum accumulated in float lanes),
// the rest 0 (the causal mask). valid >= 1.
void SoftmaxRowPrefix(float* row, int64_t valid, int64_t total);

}  // namespace tvq::bench

#endif  // TVQ_TESTS_BENCH_QUADRATIC_SOFTMAX_ROWS_H_
