#include "server/text/byte_tokenizer.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/base/str_cat.h"

namespace tvq::runtime {

absl::StatusOr<std::vector<int32_t>> ByteTokenizer::Encode(
    std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) {
    ids.push_back(static_cast<int32_t>(static_cast<unsigned char>(c)) +
                  kFirstByteId);
  }
  return ids;
}

absl::StatusOr<std::string> ByteTokenizer::Decode(
    std::span<const int32_t> ids) const {
  std::string bytes;
  bytes.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= kByteVocabSize) {
      return absl::InvalidArgumentError(
          StrCat("byte tokenizer: token id ", id, " (at position ", i,
                 ") is outside the vocabulary [0, ", kByteVocabSize, ")"));
    }
    if (id >= kFirstByteId) {
      bytes.push_back(static_cast<char>(id - kFirstByteId));
    }
  }
  return bytes;
}

}  // namespace tvq::runtime
