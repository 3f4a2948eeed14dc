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

struct ModelConfig {
  int d_model = 0;
  int d_k = 0;
  int d_v = 0;
  int n_head = 0;
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

  // Attention sublayers in execution order (layer0/attn1, layer0/attn2, ...).
  int num_sublayers() const { return 2 * n_layer; }
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
// "transformer_layers_1/scanned_attn2/".
std::string SublayerPrefix(int index);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // empty = scalar
};

// Every tensor spec §4 requires for `config`, in a stable order.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_MODEL_MODEL_CONFIG_H_
