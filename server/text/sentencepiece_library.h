// SentencePiece through libtvq_sentencepiece.so (sentencepiece_module.cc),
// loaded once with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) so that the protobuf
// copy inside Debian's libsentencepiece never meets libprotobuf (see the
// module's comment).
//
// The module is looked up in: $TVQ_SENTENCEPIECE_MODULE, the executable's
// directory, <executable dir>/../lib, the build tree it was built in, then
// the dynamic linker's search path.
#ifndef TVQ_SERVER_TEXT_SENTENCEPIECE_LIBRARY_H_
#define TVQ_SERVER_TEXT_SENTENCEPIECE_LIBRARY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tvq::runtime {

// One loaded SentencePiece model.
class SentencePieceProcessorHandle {
 public:
  // FailedPrecondition when the module cannot be loaded (naming every path
  // tried); InvalidArgument with SentencePiece's message when the file is
  // not a valid model.
  static absl::StatusOr<std::unique_ptr<SentencePieceProcessorHandle>> Load(
      const std::string& path);
  ~SentencePieceProcessorHandle();
  SentencePieceProcessorHandle(const SentencePieceProcessorHandle&) = delete;
  SentencePieceProcessorHandle& operator=(const SentencePieceProcessorHandle&) =
      delete;

  int GetPieceSize() const;
  int pad_id() const;
  int eos_id() const;
  int unk_id() const;
  int bos_id() const;
  bool IsControlOrUnknown(int id) const;
  // Errors carry SentencePiece's message (InvalidArgument / Internal).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;
  absl::StatusOr<std::string> Decode(const std::vector<int>& ids) const;

  // The module's entry points (sentencepiece_library.cc).
  struct Functions;

 private:
  SentencePieceProcessorHandle(const Functions* functions, void* processor)
      : functions_(functions), processor_(processor) {}

  const Functions* functions_;
  void* processor_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_SENTENCEPIECE_LIBRARY_H_
