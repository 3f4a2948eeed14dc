// Tokenizers: bytes (0 pad, 1 eos, 2 unk, byte b -> b + 3) and SentencePiece.
#ifndef TVQ_SERVER_RUNTIME_TOKENIZER_H_
#define TVQ_SERVER_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/runtime/model_config.h"

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

// Turns a stream of generated ids into text deltas that are always valid
// UTF-8: an incomplete trailing sequence is held back until the bytes that
// complete it arrive; invalid bytes become U+FFFD.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer);
  // Adds one id and returns the text that became final (possibly empty).
  absl::StatusOr<std::string> Append(int32_t id);
  // Returns whatever is held back (an incomplete sequence becomes U+FFFD).
  std::string Finish();
  // Text emitted so far (the concatenation of every returned delta).
  const std::string& emitted() const { return emitted_; }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  std::string emitted_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_RUNTIME_TOKENIZER_H_
