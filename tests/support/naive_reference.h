// An independent O(T^2) implementation of spec §1–2 in double precision:
// no state, no blocks, every query against every earlier key. Only for tests.
#ifndef TVQ_TESTS_RUNTIME_NAIVE_REFERENCE_H_
#define TVQ_TESTS_RUNTIME_NAIVE_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "server/model/model_weights.h"

namespace tvq::testing {

struct NaiveResult {
  std::vector<double> logprobs;  // [T, n_vocab]
  // codes[sublayer][head * T + t]
  std::vector<std::vector<int32_t>> codes;
  // Smallest relative VQ margin (d2_second - d2_best) / |k|^2 over all keys.
  double min_vq_margin = 1e300;
};

NaiveResult NaiveForward(const runtime::ModelWeights& weights,
                         const std::vector<int32_t>& tokens);

}  // namespace tvq::testing

#endif  // TVQ_TESTS_RUNTIME_NAIVE_REFERENCE_H_
