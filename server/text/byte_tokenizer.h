// The byte tokenizer of spec §1: 0 pad, 1 eos, 2 unk, byte b -> b + 3.
#ifndef TVQ_SERVER_TEXT_BYTE_TOKENIZER_H_
#define TVQ_SERVER_TEXT_BYTE_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/tokenizer.h"
#include "server/text/tokenizer_kind.h"

namespace tvq::runtime {

// Id of byte 0; byte b has id b + kFirstByteId.
inline constexpr int kFirstByteId = 3;

class ByteTokenizer final : public Tokenizer {
 public:
  TokenizerKind kind() const override { return TokenizerKind::kByte; }
  int vocab_size() const override { return kByteVocabSize; }
  // Every byte of `text` becomes one id; never fails.
  absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text) const override;
  // Drops 0, 1, 2; ids outside [0, 259) are InvalidArgument naming the id.
  // The bytes are returned as they are, valid UTF-8 or not.
  absl::StatusOr<std::string> Decode(
      std::span<const int32_t> ids) const override;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_BYTE_TOKENIZER_H_
