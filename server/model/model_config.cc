#include "server/model/model_config.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"
#include "server/base/strict_json.h"

namespace tvq::runtime {
namespace {

using nlohmann::json;

constexpr std::string_view kFormatName = "transformer-vq";
constexpr int kFormatVersion = 1;
constexpr int kOptimizedFormatVersion = 2;

absl::Status ConfigError(std::string_view file_name, std::string_view message) {
  return absl::InvalidArgumentError(StrCat(file_name, ": ", message));
}

// Reads config keys with their types checked; every message names the file
// and the key.
class ConfigReader {
 public:
  ConfigReader(const json& root, std::string_view file_name)
      : root_(root), file_name_(file_name) {}

  absl::StatusOr<const json*> Find(std::string_view key) const {
    auto it = root_.find(key);
    if (it == root_.end()) {
      return ConfigError(file_name_,
                         StrCat("missing required key \"", key, "\""));
    }
    return &*it;
  }

  // An integer that fits an int; `requirement` completes "must be ..." when
  // the value has the wrong type.
  absl::StatusOr<int> Int(std::string_view key,
                          std::string_view requirement) const {
    TVQ_ASSIGN_OR_RETURN(const json* value, Find(key));
    if (!value->is_number_integer()) {
      return ConfigError(file_name_,
                         StrCat("\"", key, "\" must be ", requirement, ", got ",
                                DescribeJson(*value)));
    }
    bool fits = false;
    int64_t number = 0;
    if (value->is_number_unsigned()) {
      const uint64_t unsigned_number = value->get<uint64_t>();
      fits = unsigned_number <=
             static_cast<uint64_t>(std::numeric_limits<int>::max());
      number = fits ? static_cast<int64_t>(unsigned_number) : 0;
    } else {
      number = value->get<int64_t>();
      fits = number >= std::numeric_limits<int>::min() &&
             number <= std::numeric_limits<int>::max();
    }
    if (!fits) {
      return ConfigError(file_name_,
                         StrCat("\"", key, "\" must be ", requirement, ", got ",
                                DescribeJson(*value), " (out of range)"));
    }
    return static_cast<int>(number);
  }

  absl::StatusOr<bool> Bool(std::string_view key) const {
    TVQ_ASSIGN_OR_RETURN(const json* value, Find(key));
    if (!value->is_boolean()) {
      return ConfigError(file_name_,
                         StrCat("\"", key, "\" must be true or false, got ",
                                DescribeJson(*value)));
    }
    return value->get<bool>();
  }

  absl::StatusOr<double> Number(std::string_view key,
                                std::string_view requirement) const {
    TVQ_ASSIGN_OR_RETURN(const json* value, Find(key));
    if (!value->is_number()) {
      return ConfigError(file_name_,
                         StrCat("\"", key, "\" must be ", requirement, ", got ",
                                DescribeJson(*value)));
    }
    return value->get<double>();
  }

 private:
  const json& root_;
  std::string_view file_name_;
};

absl::Status ParseTokenizer(const json& tokenizer, std::string_view file_name,
                            ModelConfig& config) {
  if (!tokenizer.is_object()) {
    return ConfigError(
        file_name,
        StrCat("\"tokenizer\" must be an object like {\"kind\": "
               "\"byte\"} or {\"kind\": \"sentencepiece\", \"file\": "
               "\"tokenizer.model\"}, got ",
               DescribeJson(tokenizer)));
  }
  auto kind = tokenizer.find("kind");
  if (kind == tokenizer.end()) {
    return ConfigError(file_name,
                       "missing required key \"tokenizer.kind\" (\"byte\" or "
                       "\"sentencepiece\")");
  }
  std::vector<std::string_view> allowed_keys = {"kind"};
  if (kind->is_string() && kind->get_ref<const std::string&>() == "byte") {
    config.tokenizer_kind = TokenizerKind::kByte;
    config.tokenizer_file.clear();
  } else if (kind->is_string() &&
             kind->get_ref<const std::string&>() == "sentencepiece") {
    config.tokenizer_kind = TokenizerKind::kSentencePiece;
    allowed_keys.push_back("file");
    auto file = tokenizer.find("file");
    if (file == tokenizer.end()) {
      return ConfigError(file_name,
                         "missing required key \"tokenizer.file\" (the "
                         "SentencePiece model, e.g. \"tokenizer.model\")");
    }
    if (!file->is_string()) {
      return ConfigError(file_name,
                         StrCat("\"tokenizer.file\" must be a file name, got ",
                                DescribeJson(*file)));
    }
    config.tokenizer_file = file->get<std::string>();
  } else {
    return ConfigError(file_name,
                       StrCat("\"tokenizer.kind\" must be \"byte\" or "
                              "\"sentencepiece\", got ",
                              DescribeJson(*kind)));
  }
  for (const auto& [key, value] : tokenizer.items()) {
    bool allowed = false;
    for (std::string_view allowed_key : allowed_keys) {
      allowed = allowed || key == allowed_key;
    }
    if (!allowed) {
      return ConfigError(file_name,
                         StrCat("\"tokenizer\" has unexpected key \"", key,
                                "\" for kind ", DescribeJson(*kind)));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDimension(std::string_view file_name, std::string_view key,
                            int value) {
  const int limit = key == "n_layer" ? kMaxLayers
                    : (key == "mem_len" || key == "block_len")
                        ? kMaxWindowLength
                        : kMaxModelDimension;
  if (value < 1) {
    return ConfigError(
        file_name,
        StrCat("\"", key, "\" must be an integer >= 1, got ", value));
  }
  if (value > limit) {
    return ConfigError(file_name, StrCat("\"", key, "\" must be at most ",
                                         limit, ", got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenId(std::string_view file_name, std::string_view key,
                          int value, int n_vocab) {
  if (value < 0 || value >= n_vocab) {
    return ConfigError(
        file_name, StrCat("\"", key, "\" must be in [0, n_vocab = ", n_vocab,
                          "), got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckTokenizerFileName(std::string_view file_name,
                                    std::string_view tokenizer_file) {
  auto bad = [&](std::string_view why) {
    return ConfigError(file_name, StrCat("\"tokenizer.file\" ", why, ", got \"",
                                         tokenizer_file, "\""));
  };
  if (tokenizer_file.empty()) return bad("must be a non-empty file name");
  if (tokenizer_file.front() == '/') {
    return bad("must be relative to the model directory");
  }
  if (tokenizer_file.find('\0') != std::string_view::npos) {
    return bad("must not contain NUL");
  }
  for (size_t begin = 0; begin <= tokenizer_file.size();) {
    size_t end = tokenizer_file.find('/', begin);
    if (end == std::string_view::npos) end = tokenizer_file.size();
    if (tokenizer_file.substr(begin, end - begin) == "..") {
      return bad("must stay inside the model directory");
    }
    begin = end + 1;
  }
  return absl::OkStatus();
}

// format_version 2: head_type and the sizes the official code derives from
// it (QKVGProducer.get_n_q / get_n_kv / get_d_v, MultiLayerPerceptron.
// get_d_ff); M = L and the aggregated cache always on.
absl::Status DeriveOptimizedShape(const ConfigReader& reader,
                                  std::string_view file_name,
                                  ModelConfig& config) {
  TVQ_ASSIGN_OR_RETURN(const json* head_type, reader.Find("head_type"));
  const std::string name =
      head_type->is_string() ? head_type->get<std::string>() : "";
  if (name == "shga") {
    config.head_type = HeadType::kShga;
  } else if (name == "mqa") {
    config.head_type = HeadType::kMqa;
  } else if (name == "mha") {
    config.head_type = HeadType::kMha;
  } else {
    return ConfigError(file_name,
                       StrCat("\"head_type\" must be \"shga\", \"mqa\" or "
                              "\"mha\", got ",
                              DescribeJson(*head_type)));
  }
  TVQ_RETURN_IF_ERROR(CheckDimension(file_name, "d_model", config.d_model));
  TVQ_RETURN_IF_ERROR(CheckDimension(file_name, "d_k", config.d_k));
  if (config.d_model % config.d_k != 0) {
    return ConfigError(file_name,
                       StrCat("\"d_model\" (", config.d_model,
                              ") must be a multiple of \"d_k\" (", config.d_k,
                              ") in format_version 2"));
  }
  if (config.d_model > kMaxModelDimension / 5) {
    return ConfigError(file_name,
                       StrCat("\"d_model\" must be at most ",
                              kMaxModelDimension / 5,
                              " in format_version 2 (d_v and d_ff grow with "
                              "it), got ",
                              config.d_model));
  }
  const int heads = config.d_model / config.d_k;
  switch (config.head_type) {
    case HeadType::kShga:
      config.n_query_head = 1;
      config.n_head = 1;
      config.d_v = 2 * config.d_model;
      config.d_ff = 0;
      break;
    case HeadType::kMqa:
      config.n_query_head = heads;
      config.n_head = 1;
      config.d_v = config.d_k;
      config.d_ff = 5 * config.d_model;
      break;
    case HeadType::kMha:
      config.n_query_head = heads;
      config.n_head = heads;
      config.d_v = config.d_k;
      config.d_ff = 4 * config.d_model;
      break;
  }
  config.mem_len = config.block_len;
  config.agg_cache = true;
  return absl::OkStatus();
}

// format_version 2 applies e_scale before the output bias; a zero factor
// would leave only the bias (and the engine divides the bias by it).
absl::Status CheckOptimizedScale(const ModelConfig& config,
                                 std::string_view file_name) {
  if (config.format_version == 2 && config.e_scale == 0) {
    return ConfigError(file_name,
                       "\"e_scale\" must be nonzero in format_version 2, got 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateModelConfig(const ModelConfig& config,
                                 std::string_view file_name) {
  const std::pair<std::string_view, int> dimensions[] = {
      {"d_model", config.d_model}, {"d_k", config.d_k},
      {"d_v", config.d_v},         {"n_head", config.n_head},
      {"n_code", config.n_code},   {"n_layer", config.n_layer},
      {"n_vocab", config.n_vocab}, {"block_len", config.block_len},
      {"mem_len", config.mem_len},
  };
  for (const auto& [key, value] : dimensions) {
    TVQ_RETURN_IF_ERROR(CheckDimension(file_name, key, value));
  }
  if (config.d_model % 2 != 0) {
    return ConfigError(
        file_name, StrCat("\"d_model\" must be even, got ", config.d_model));
  }
  if (!std::isfinite(config.pe_lam) || config.pe_lam <= 0) {
    return ConfigError(
        file_name,
        StrCat("\"pe_lam\" must be a number > 0, got ", config.pe_lam));
  }
  if (config.pe_lam > kMaxPositionLambda) {
    return ConfigError(file_name,
                       absl::StrFormat("\"pe_lam\" must be at most %g, got %g",
                                       kMaxPositionLambda, config.pe_lam));
  }
  if (!std::isfinite(config.e_scale) ||
      std::abs(config.e_scale) > kMaxEmbeddingScale) {
    return ConfigError(
        file_name, StrCat("\"e_scale\" must be a finite number in [-",
                          absl::StrFormat("%g", kMaxEmbeddingScale), ", ",
                          absl::StrFormat("%g", kMaxEmbeddingScale), "], got ",
                          absl::StrFormat("%g", config.e_scale)));
  }
  TVQ_RETURN_IF_ERROR(CheckOptimizedScale(config, file_name));
  TVQ_RETURN_IF_ERROR(
      CheckTokenId(file_name, "eos_id", config.eos_id, config.n_vocab));
  TVQ_RETURN_IF_ERROR(
      CheckTokenId(file_name, "pad_id", config.pad_id, config.n_vocab));
  TVQ_RETURN_IF_ERROR(
      CheckTokenId(file_name, "unk_id", config.unk_id, config.n_vocab));
  switch (config.tokenizer_kind) {
    case TokenizerKind::kByte:
      if (config.n_vocab < kByteVocabSize) {
        return ConfigError(
            file_name, StrCat("\"n_vocab\" must be >= ", kByteVocabSize,
                              " for the byte tokenizer, got ", config.n_vocab));
      }
      break;
    case TokenizerKind::kSentencePiece:
      TVQ_RETURN_IF_ERROR(
          CheckTokenizerFileName(file_name, config.tokenizer_file));
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view file_name) {
  TVQ_ASSIGN_OR_RETURN(
      json root, ParseStrictJson(json_text, absl::StatusCode::kInvalidArgument,
                                 file_name));
  if (!root.is_object()) {
    return ConfigError(
        file_name, StrCat("must hold a JSON object, got ", JsonTypeName(root)));
  }
  ConfigReader reader(root, file_name);

  // The format comes first: a file of another format fails on it, not on
  // whichever key it happens to lack.
  TVQ_ASSIGN_OR_RETURN(const json* format, reader.Find("format"));
  if (!format->is_string() ||
      format->get_ref<const std::string&>() != kFormatName) {
    return ConfigError(file_name, StrCat("\"format\" must be \"", kFormatName,
                                         "\", got ", DescribeJson(*format)));
  }
  TVQ_ASSIGN_OR_RETURN(const json* version, reader.Find("format_version"));
  if (!version->is_number_integer() ||
      (version->get<int64_t>() != kFormatVersion &&
       version->get<int64_t>() != kOptimizedFormatVersion)) {
    return ConfigError(
        file_name,
        StrCat("unsupported \"format_version\" ", DescribeJson(*version),
               " (this server reads format_version ", kFormatVersion, " and ",
               kOptimizedFormatVersion, ")"));
  }

  ModelConfig config;
  config.format_version = static_cast<int>(version->get<int64_t>());
  const bool optimized = config.format_version == kOptimizedFormatVersion;
  constexpr std::string_view kPositive = "an integer >= 1";
  std::vector<std::pair<std::string_view, int*>> dimensions = {
      {"d_model", &config.d_model}, {"d_k", &config.d_k},
      {"n_code", &config.n_code},   {"n_layer", &config.n_layer},
      {"n_vocab", &config.n_vocab}, {"block_len", &config.block_len},
  };
  if (!optimized) {
    dimensions.push_back({"d_v", &config.d_v});
    dimensions.push_back({"n_head", &config.n_head});
    dimensions.push_back({"mem_len", &config.mem_len});
  }
  for (const auto& [key, field] : dimensions) {
    TVQ_ASSIGN_OR_RETURN(*field, reader.Int(key, kPositive));
  }
  std::vector<std::pair<std::string_view, bool*>> flags = {
      {"pe_abs", &config.pe_abs},
      {"e_tie", &config.e_tie},
      {"e_preln", &config.e_preln},
  };
  if (!optimized) flags.push_back({"agg_cache", &config.agg_cache});
  for (const auto& [key, field] : flags) {
    TVQ_ASSIGN_OR_RETURN(*field, reader.Bool(key));
  }
  if (optimized) {
    TVQ_RETURN_IF_ERROR(DeriveOptimizedShape(reader, file_name, config));
  } else {
    config.n_query_head = config.n_head;
  }
  TVQ_ASSIGN_OR_RETURN(config.pe_lam, reader.Number("pe_lam", "a number > 0"));
  TVQ_ASSIGN_OR_RETURN(config.e_scale, reader.Number("e_scale", "a number"));
  constexpr std::string_view kTokenId = "an integer in [0, n_vocab)";
  TVQ_ASSIGN_OR_RETURN(config.eos_id, reader.Int("eos_id", kTokenId));
  TVQ_ASSIGN_OR_RETURN(config.pad_id, reader.Int("pad_id", kTokenId));
  TVQ_ASSIGN_OR_RETURN(config.unk_id, reader.Int("unk_id", kTokenId));
  TVQ_ASSIGN_OR_RETURN(const json* tokenizer, reader.Find("tokenizer"));
  TVQ_RETURN_IF_ERROR(ParseTokenizer(*tokenizer, file_name, config));

  TVQ_RETURN_IF_ERROR(ValidateModelConfig(config, file_name));
  return config;
}

absl::Status CheckTokenIds(std::span<const int32_t> ids, int n_vocab,
                           std::string_view field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s[%d] must be a token id in [0, %d), got %d", field,
                          i, n_vocab, ids[i]));
    }
  }
  return absl::OkStatus();
}

std::string StackedAttentionPrefix(int within_layer) {
  return StrCat("stack/VQAttention_", within_layer, "/");
}

std::string_view HeadTypeName(HeadType head_type) {
  switch (head_type) {
    case HeadType::kShga:
      return "shga";
    case HeadType::kMqa:
      return "mqa";
    case HeadType::kMha:
      return "mha";
  }
  return "?";
}

std::string SublayerPrefix(int index) {
  return StrCat("transformer_layers_", index / 2, "/scanned_attn",
                index % 2 + 1, "/");
}

namespace {

// format_version 2: the official params tree of the optimized branch.
std::vector<TensorSpec> ExpectedStackedTensors(const ModelConfig& config) {
  const int64_t D = config.d_model, V = config.n_vocab, L = config.n_layer;
  const int64_t n_q = config.n_query_head, n_kv = config.n_head;
  const int64_t d_k = config.d_k, d_v = config.d_v, S = config.n_code;
  std::vector<TensorSpec> specs = {{"token_embed/embedding", {V, D}}};
  if (config.pe_abs) specs.push_back({"pos_embed/scale", {}});
  if (!config.e_tie) {
    specs.push_back({"out_proj/kernel", {D, V}});
    specs.push_back({"out_proj/bias", {V}});
  }
  for (int a = 0; a < config.attention_per_layer(); ++a) {
    const std::string p = StackedAttentionPrefix(a);
    specs.push_back({p + "qkvg_producer/q_proj/kernel", {L, 1, D, n_q * d_k}});
    specs.push_back({p + "qkvg_producer/k_proj/kernel", {L, 1, D, n_kv * d_k}});
    specs.push_back({p + "qkvg_producer/v_proj/kernel", {L, 1, D, n_kv * d_v}});
    if (config.head_type == HeadType::kShga) {
      specs.push_back({p + "qkvg_producer/g_proj/kernel", {L, 1, D, d_v}});
    }
    specs.push_back(
        {p + "xl_bias_producer/xl_r_proj/kernel", {L, 1, D, n_kv * d_k}});
    specs.push_back({p + "xl_bias_producer/xl_u", {L, 1, n_q * d_k}});
    specs.push_back({p + "xl_bias_producer/xl_v", {L, 1, n_q * d_k}});
    specs.push_back({p + "quantizer/c_sum", {L, 1, n_kv, S, d_k}});
    specs.push_back({p + "quantizer/c_count", {L, 1, n_kv, S}});
    specs.push_back({p + "res_proj/kernel", {L, 1, n_q * d_v, D}});
  }
  if (config.d_ff > 0) {
    const std::string p(kStackedMlpPrefix);
    specs.push_back({p + "Dense_0/kernel", {L, 1, D, config.d_ff}});
    specs.push_back({p + "Dense_1/kernel", {L, 1, config.d_ff, D}});
  }
  return specs;
}

}  // namespace

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config) {
  if (config.format_version == 2) return ExpectedStackedTensors(config);
  const int64_t d_model = config.d_model;
  const int64_t n_vocab = config.n_vocab;
  const int64_t n_head = config.n_head;
  const int64_t d_k = config.d_k;
  const int64_t d_v = config.d_v;
  const int64_t n_code = config.n_code;

  std::vector<TensorSpec> specs = {
      {"token_embedder/embs", {n_vocab, d_model}},
      {"token_embedder/bias_out", {n_vocab}},
  };
  if (config.pe_abs) specs.push_back({"position_embedder/scale", {}});
  if (config.e_preln) {
    specs.push_back({"out_ln/g", {d_model}});
    specs.push_back({"out_ln/b", {d_model}});
  }
  if (!config.e_tie) {
    specs.push_back({"out_proj/kernel", {d_model, n_vocab}});
    specs.push_back({"out_proj/bias", {n_vocab}});
  }
  for (int sublayer = 0; sublayer < config.num_sublayers(); ++sublayer) {
    const std::string prefix = SublayerPrefix(sublayer);
    specs.push_back({prefix + "input_ln/g", {d_model}});
    specs.push_back({prefix + "input_ln/b", {d_model}});
    specs.push_back({prefix + "q_proj/kernel", {d_model, n_head * d_k}});
    specs.push_back(
        {prefix + "kvg_proj/kernel", {d_model, n_head * (d_k + 2 * d_v)}});
    specs.push_back({prefix + "r_proj/kernel", {d_model, n_head * d_k}});
    specs.push_back({prefix + "res_proj/kernel", {n_head * d_v, d_model}});
    specs.push_back({prefix + "u", {n_head * d_k}});
    specs.push_back({prefix + "v", {n_head * d_k}});
    specs.push_back({prefix + "quantizer/c_sum", {n_head, n_code, d_k}});
    specs.push_back({prefix + "quantizer/c_count", {n_head, n_code}});
  }
  return specs;
}

}  // namespace tvq::runtime
