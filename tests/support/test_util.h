// Shared helpers of the runtime tests: golden files and random models.
#ifndef TVQ_TESTS_RUNTIME_TEST_UTIL_H_
#define TVQ_TESTS_RUNTIME_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "server/model/model_config.h"
#include "server/model/model_weights.h"

namespace tvq::testing {

// One golden folder: tests/data/golden/NAME/{model/, golden.safetensors}.
struct GoldenCase {
  std::string name;
  std::string model_dir;
  std::vector<int32_t> tokens;   // [T], tokens[0] = eos
  std::vector<float> logprobs;   // [T, n_vocab]
  std::vector<int32_t> codes;    // [num_sublayers, n_head, T]
};

// The golden folder names in tests/data/golden.
std::vector<std::string> GoldenNames();
// The optimized-branch family's goldens (format_version 2), made by the
// official code itself (tools/make_optimized_golden.py): one per head type.
std::vector<std::string> OptimizedGoldenNames();

// Reads tests/data/golden/NAME; aborts the test binary on a malformed file.
GoldenCase LoadGolden(const std::string& name);

// A random model of `config` (weights ~ N(0, 1/sqrt(fan_in)), codebooks with
// counts in [0.5, 5]), deterministic in `seed`.
std::unique_ptr<runtime::ModelWeights> RandomModel(
    const runtime::ModelConfig& config, uint32_t seed);

// A byte-vocabulary config with the given shape (agg_cache, pe_abs, e_tie,
// e_preln off; pe_lam 10000; e_scale 1).
runtime::ModelConfig SmallConfig(int d_model, int d_k, int d_v, int n_head,
                                 int n_code, int n_layer, int block_len,
                                 int mem_len);

// `count` tokens in [3, n_vocab) after a leading eos (1), seeded.
std::vector<int32_t> RandomTokens(int count, int n_vocab, uint32_t seed);

}  // namespace tvq::testing

#endif  // TVQ_TESTS_RUNTIME_TEST_UTIL_H_
