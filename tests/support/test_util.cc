#include "tests/support/test_util.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "nlohmann/json.hpp"

namespace tvq::testing {
namespace {

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "test_util: %s\n", message.c_str());
  std::abort();
}

// Minimal safetensors reader for the golden files (I32 and F32 only).
std::map<std::string, std::string> ReadRawTensors(const std::string& path,
                                                  std::map<std::string, std::string>* dtypes) {
  std::ifstream file(path, std::ios::binary);
  if (!file) Fail("cannot open " + path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string blob = buffer.str();
  uint64_t header_length = 0;
  std::memcpy(&header_length, blob.data(), 8);
  const nlohmann::json header =
      nlohmann::json::parse(blob.substr(8, header_length));
  const size_t data_start = 8 + header_length;
  std::map<std::string, std::string> tensors;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const size_t begin = info["data_offsets"][0], end = info["data_offsets"][1];
    tensors[name] = blob.substr(data_start + begin, end - begin);
    (*dtypes)[name] = info["dtype"];
  }
  return tensors;
}

template <typename T>
std::vector<T> AsVector(const std::string& raw) {
  std::vector<T> values(raw.size() / sizeof(T));
  std::memcpy(values.data(), raw.data(), values.size() * sizeof(T));
  return values;
}

}  // namespace

std::vector<std::string> GoldenNames() {
  return {"tiny-byte", "tiny-noagg", "tiny-tied"};
}

std::vector<std::string> OptimizedGoldenNames() {
  return {"optimized-shga", "optimized-mqa", "optimized-mha"};
}

GoldenCase LoadGolden(const std::string& name) {
  GoldenCase golden;
  golden.name = name;
  const std::string root = std::string(TVQ_TEST_DATA_DIR) + "/golden/" + name;
  golden.model_dir = root + "/model";
  std::map<std::string, std::string> dtypes;
  auto tensors = ReadRawTensors(root + "/golden.safetensors", &dtypes);
  if (dtypes["tokens"] != "I32" || dtypes["logprobs"] != "F32" ||
      dtypes["codes"] != "I32") {
    Fail("unexpected dtypes in " + root);
  }
  golden.tokens = AsVector<int32_t>(tensors["tokens"]);
  golden.logprobs = AsVector<float>(tensors["logprobs"]);
  golden.codes = AsVector<int32_t>(tensors["codes"]);
  return golden;
}

runtime::ModelConfig SmallConfig(int d_model, int d_k, int d_v, int n_head,
                                 int n_code, int n_layer, int block_len,
                                 int mem_len) {
  runtime::ModelConfig config;
  config.d_model = d_model;
  config.d_k = d_k;
  config.d_v = d_v;
  config.n_head = n_head;
  config.n_code = n_code;
  config.n_layer = n_layer;
  config.n_vocab = 259;
  config.block_len = block_len;
  config.mem_len = mem_len;
  config.agg_cache = false;
  config.pe_abs = false;
  config.pe_lam = 10000;
  config.e_tie = false;
  config.e_preln = false;
  config.e_scale = 1;
  config.tokenizer_kind = runtime::TokenizerKind::kByte;
  return config;
}

std::unique_ptr<runtime::ModelWeights> RandomModel(
    const runtime::ModelConfig& config, uint32_t seed) {
  std::mt19937 generator(seed);
  std::map<std::string, std::vector<float>> tensors;
  for (const runtime::TensorSpec& spec : runtime::ExpectedTensors(config)) {
    size_t count = 1;
    for (int64_t dimension : spec.shape) count *= dimension;
    const double fan_in = spec.shape.size() == 2 ? spec.shape[0] : 1;
    std::normal_distribution<float> normal(0.0f, static_cast<float>(1.0 / std::sqrt(fan_in)));
    std::vector<float> values(count);
    const std::string& name = spec.name;
    auto ends_with = [&](const char* suffix) {
      return name.size() >= std::strlen(suffix) &&
             name.compare(name.size() - std::strlen(suffix), std::string::npos, suffix) == 0;
    };
    if (ends_with("c_count")) {
      std::uniform_real_distribution<float> uniform(0.5f, 5.0f);
      for (float& value : values) value = uniform(generator);
    } else if (ends_with("/g")) {
      std::uniform_real_distribution<float> uniform(0.8f, 1.2f);
      for (float& value : values) value = uniform(generator);
    } else if (name == "token_embedder/embs") {
      std::normal_distribution<float> unit(0.0f, 1.0f);
      for (float& value : values) value = unit(generator);
    } else if (name == "position_embedder/scale") {
      values[0] = 0.5f;
    } else {
      for (float& value : values) value = normal(generator);
    }
    tensors[name] = std::move(values);
  }
  // c_sum = codeword * count, codewords of the same scale as the keys.
  for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
    const std::string prefix = runtime::SublayerPrefix(sublayer);
    std::vector<float>& c_sum = tensors[prefix + "quantizer/c_sum"];
    const std::vector<float>& c_count = tensors[prefix + "quantizer/c_count"];
    std::normal_distribution<float> unit(0.0f, static_cast<float>(std::pow(config.d_k, -0.25)));
    for (size_t i = 0; i < c_sum.size(); ++i) {
      c_sum[i] = unit(generator) * c_count[i / config.d_k];
    }
  }
  auto weights = runtime::ModelWeights::FromTensors(config, std::move(tensors));
  if (!weights.ok()) Fail(weights.status().ToString());
  return std::move(weights).value();
}

std::vector<int32_t> RandomTokens(int count, int n_vocab, uint32_t seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> uniform(3, n_vocab - 1);
  std::vector<int32_t> tokens(count);
  if (count > 0) tokens[0] = 1;
  for (int i = 1; i < count; ++i) tokens[i] = uniform(generator);
  return tokens;
}

}  // namespace tvq::testing
