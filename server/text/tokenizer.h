// Tokenizers: bytes (0 pad, 1 eos, 2 unk, byte b -> b + 3) and SentencePiece.
#ifndef TVQ_SERVER_TEXT_TOKENIZER_H_
#define TVQ_SERVER_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "server/model/model_config.h"

namespace tvq::runtime {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual TokenizerKind kind() const = 0;
  // Number of ids the tokenizer can produce.
  virtual int vocab_size() const = 0;
  // Text to ids (no eos prefix: the caller adds it).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text) const = 0;
  // Ids to bytes; special ids (pad, eos, unk, control pieces) are dropped.
  // The result may end in an incomplete UTF-8 sequence (byte models).
  virtual absl::StatusOr<std::string> Decode(
      std::span<const int32_t> ids) const = 0;
};

// Creates the tokenizer `config` names; SentencePiece files are read from
// `model_dir`. Errors name the file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const ModelConfig& config, const std::string& model_dir);

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_TOKENIZER_H_
