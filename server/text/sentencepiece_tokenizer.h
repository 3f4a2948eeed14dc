// A SentencePiece model (tokenizer.model) behind the Tokenizer interface.
#ifndef TVQ_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_
#define TVQ_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/sentencepiece_library.h"
#include "server/text/tokenizer.h"

namespace tvq::runtime {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Loads a SentencePiece model file: NotFound when it does not exist,
  // DataLoss when it is not a SentencePiece model.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(
      const std::string& path);
  ~SentencePieceTokenizer() override;

  TokenizerKind kind() const override { return TokenizerKind::kSentencePiece; }
  // The number of pieces of the model.
  int vocab_size() const override;
  // Ids as the model defines them; no bos or eos is added.
  absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text) const override;
  // Control pieces (pad, eos, bos) and unknown pieces are dropped; ids
  // outside [0, vocab_size()) are InvalidArgument naming the id.
  absl::StatusOr<std::string> Decode(
      std::span<const int32_t> ids) const override;

  // The ids of the model's special pieces, -1 when the model has none.
  int pad_id() const;
  int eos_id() const;
  int unk_id() const;
  int bos_id() const;
  const std::string& path() const { return path_; }

 private:
  SentencePieceTokenizer(
      std::string path,
      std::unique_ptr<SentencePieceProcessorHandle> processor);

  std::string path_;
  std::unique_ptr<SentencePieceProcessorHandle> processor_;
  // Per id: whether Decode drops it (control or unknown piece).
  std::vector<bool> dropped_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_
