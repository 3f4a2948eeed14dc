// The model hyper-parameters of config.json (spec §4), parsed and validated.
#ifndef TVQ_SERVER_MODEL_MODEL_CONFIG_H_
#define TVQ_SERVER_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/text/tokenizer_kind.h"

namespace tvq::runtime {

// Head layout of the optimized-branch family (format_version 2).
enum class HeadType { kShga, kMqa, kMha };

struct ModelConfig {
  // 1: the main branch's family (two attention sublayers per layer, fused
  // kvg_proj, gained norms). 2: the optimized branch's (stacked layers,
  // head_type, MLP sublayers for mqa/mha, RMS norms without gain, M = L).
  int format_version = 1;
  // format_version 2 only.
  HeadType head_type = HeadType::kShga;
  int d_model = 0;
  int d_k = 0;
  int d_v = 0;
  // Key/value heads: the heads of the codebook and of the decode state. In
  // format_version 1 every head has its own query too.
  int n_head = 0;
  // Query heads (n_head in format_version 1; d_model / d_k for mqa/mha).
  int n_query_head = 0;
  // Width of the MLP sublayers (format_version 2 mqa/mha; 0 = none).
  int d_ff = 0;
  int n_code = 0;
  int n_layer = 0;
  int n_vocab = 0;
  int block_len = 0;
  int mem_len = 0;
  bool agg_cache = false;
  bool pe_abs = false;
  double pe_lam = 0;
  bool e_tie = false;
  bool e_preln = false;
  double e_scale = 1;
  int eos_id = 1;
  int pad_id = 0;
  int unk_id = 2;
  TokenizerKind tokenizer_kind = TokenizerKind::kByte;
  // For kSentencePiece: file name inside the model directory.
  std::string tokenizer_file;

  // Attention sublayers in execution order (layer0/attn1, layer0/attn2, ...;
  // format_version 2 mqa/mha: one per layer, each followed by an MLP).
  int num_sublayers() const {
    return format_version == 2 && head_type != HeadType::kShga ? n_layer
                                                               : 2 * n_layer;
  }
  // Attention sublayers per layer.
  int attention_per_layer() const { return num_sublayers() / n_layer; }
};

// Parses and validates config.json text. `file_name` is used in messages,
// which name the offending key: `config.json: "d_k" must be an integer >= 1,
// got "x"`.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view file_name);

// Largest value accepted for a size key (d_model, n_vocab, mem_len, ...),
// and for n_layer.
inline constexpr int kMaxModelDimension = 1 << 24;
inline constexpr int kMaxLayers = 4096;
// Largest block_len and mem_len: the position tables and every slot grow
// with mem_len (memory_budget.h checks what a model needs as a whole).
inline constexpr int kMaxWindowLength = 1 << 20;
// |e_scale| and pe_lam at most these (larger ones overflow float32 in the
// forward pass: Generate failed INTERNAL, Score gave NaN).
inline constexpr double kMaxEmbeddingScale = 1e4;
inline constexpr double kMaxPositionLambda = 1e12;

// Checks the values of an already typed config (ranges, d_model even, ids
// within [0, n_vocab), the byte vocabulary, the tokenizer file name).
// ParseModelConfig calls it; so does ModelWeights::FromTensors.
absl::Status ValidateModelConfig(const ModelConfig& config,
                                 std::string_view file_name);

// The one token-range check: every id of `ids` must be in [0, n_vocab).
// InvalidArgument otherwise, naming the field, the index, the range and the
// value: "token_ids[1] must be a token id in [0, 259), got 259". Used by
// request validation, the scheduler and the engine.
absl::Status CheckTokenIds(std::span<const int32_t> ids, int n_vocab,
                           std::string_view field);

// Prefix of sublayer `index` (0-based, execution order), e.g.
// "transformer_layers_1/scanned_attn2/" (format_version 1).
std::string SublayerPrefix(int index);

// format_version 2: the stacked name of attention sublayer `within_layer`
// (0 or 1) of every layer, "stack/VQAttention_0/", and of the MLP,
// "stack/MultiLayerPerceptron_0/". Tensors under "stack/" have the leading
// axes [n_layer, 1].
std::string StackedAttentionPrefix(int within_layer);
inline constexpr std::string_view kStackedMlpPrefix =
    "stack/MultiLayerPerceptron_0/";
// "shga", "mqa", "mha".
std::string_view HeadTypeName(HeadType head_type);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // empty = scalar
};

// Every tensor spec §4 requires for `config`, in a stable order.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_MODEL_MODEL_CONFIG_H_
