#include "server/text/sentencepiece_tokenizer.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/base/str_cat.h"

namespace tvq::runtime {

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>>
SentencePieceTokenizer::Load(const std::string& path) {
  struct stat file_status;
  if (::stat(path.c_str(), &file_status) != 0) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(
          StrCat(path, ": SentencePiece model file not found"));
    }
    return absl::ErrnoToStatus(error, StrCat(path, ": cannot read"));
  }
  if (!S_ISREG(file_status.st_mode)) {
    return absl::InvalidArgumentError(StrCat(path, ": is not a regular file"));
  }
  absl::StatusOr<std::unique_ptr<SentencePieceProcessorHandle>> processor =
      SentencePieceProcessorHandle::Load(path);
  if (absl::IsFailedPrecondition(processor.status())) {
    return processor.status();
  }
  if (!processor.ok()) {
    return absl::DataLossError(StrCat(
        path,
        ": not a valid SentencePiece model: ", processor.status().message()));
  }
  if ((*processor)->GetPieceSize() < 1) {
    return absl::DataLossError(
        StrCat(path, ": the SentencePiece model has no pieces"));
  }
  return std::unique_ptr<SentencePieceTokenizer>(
      new SentencePieceTokenizer(path, *std::move(processor)));
}

SentencePieceTokenizer::SentencePieceTokenizer(
    std::string path, std::unique_ptr<SentencePieceProcessorHandle> processor)
    : path_(std::move(path)), processor_(std::move(processor)) {
  const int num_pieces = processor_->GetPieceSize();
  dropped_.resize(num_pieces);
  for (int id = 0; id < num_pieces; ++id) {
    dropped_[id] = processor_->IsControlOrUnknown(id);
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int SentencePieceTokenizer::vocab_size() const {
  return processor_->GetPieceSize();
}

int SentencePieceTokenizer::pad_id() const { return processor_->pad_id(); }
int SentencePieceTokenizer::eos_id() const { return processor_->eos_id(); }
int SentencePieceTokenizer::unk_id() const { return processor_->unk_id(); }
int SentencePieceTokenizer::bos_id() const { return processor_->bos_id(); }

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(
    std::string_view text) const {
  absl::StatusOr<std::vector<int32_t>> piece_ids = processor_->Encode(text);
  if (!piece_ids.ok()) {
    return absl::InvalidArgumentError(
        StrCat(path_, ": SentencePiece cannot encode the text: ",
               piece_ids.status().message()));
  }
  return piece_ids;
}

absl::StatusOr<std::string> SentencePieceTokenizer::Decode(
    std::span<const int32_t> ids) const {
  std::vector<int> kept_ids;
  kept_ids.reserve(ids.size());
  const int num_pieces = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= num_pieces) {
      return absl::InvalidArgumentError(
          StrCat("sentencepiece tokenizer: token id ", id, " (at position ", i,
                 ") is outside the vocabulary [0, ", num_pieces, ")"));
    }
    if (!dropped_[id]) kept_ids.push_back(id);
  }
  absl::StatusOr<std::string> text = processor_->Decode(kept_ids);
  if (!text.ok()) {
    return absl::InternalError(StrCat(
        path_, ": SentencePiece cannot decode: ", text.status().message()));
  }
  return text;
}

}  // namespace tvq::runtime
