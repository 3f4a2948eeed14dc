// Tokenizers: bytes (0 pad, 1 eos, 2 unk, byte b -> b + 3) and SentencePiece.
#ifndef TVQ_SERVER_RUNTIME_TOKENIZER_H_
#define TVQ_SERVER_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
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
  // Whether `id` decodes to nothing and leaves its neighbours unchanged
  // (pad, eos, unk, control pieces): such ids never enter the window.
  absl::StatusOr<bool> IsSilent(int32_t id);
  // Makes the last id of the window its whole context; call only when
  // everything decoded so far has been emitted.
  void StartNewWindow();

  const Tokenizer& tokenizer_;
  // Decode window: `context_size_` ids whose text is already emitted (at
  // most one after the first delta), then the ids still pending. Decoding
  // the context along with the new ids keeps SentencePiece's leading space
  // and byte-fallback runs as the full decode has them; the window stays
  // short, so a token costs O(1) decoding, not O(length).
  std::vector<int32_t> ids_;
  size_t context_size_ = 0;
  // Decode(ids_[0, context_size_)) and Decode(ids_).
  std::string context_text_;
  std::string window_text_;
  // Bytes of window_text_ after context_text_ that were already emitted.
  size_t emitted_in_window_ = 0;
  std::unordered_map<int32_t, bool> silent_ids_;
  std::string emitted_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_RUNTIME_TOKENIZER_H_
