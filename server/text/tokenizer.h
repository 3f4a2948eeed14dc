// The tokenizer interface: bytes (0 pad, 1 eos, 2 unk, byte b -> b + 3,
// byte_tokenizer.h) and SentencePiece (sentencepiece_tokenizer.h). Which one
// a model uses, checked against its config, is loaded by
// model/model_dir.h's LoadTokenizer.
#ifndef TVQ_SERVER_TEXT_TOKENIZER_H_
#define TVQ_SERVER_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/tokenizer_kind.h"

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

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_TOKENIZER_H_
