// libtvq_sentencepiece.so: SentencePiece behind a C interface, loaded with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by sentencepiece_library.cc.
//
// Why: Debian's libsentencepiece.so carries its own copy of protobuf-lite
// 3.14 and exports every protobuf symbol. In a process that also loads
// libprotobuf.so 3.21 (gRPC, the server), whichever copy the dynamic linker
// finds first serves both libraries and the process aborts at start-up
// ("compiled against version 3.14.0 ... not compatible with 3.21.12") or
// crashes in protobuf's static initializers. Loaded locally with deep
// binding, SentencePiece keeps its protobuf to itself. Only C types cross
// this boundary.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

// Debian's sentencepiece_processor.h declares `namespace absl { using
// std::string_view; }`; keep it away from anything named absl.
#define absl tvq_sentencepiece_absl
#include <sentencepiece_processor.h>
#undef absl

namespace {

void CopyError(const std::string& message, char* error, size_t error_size) {
  if (error == nullptr || error_size == 0) return;
  const size_t length = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), length);
  error[length] = '\0';
}

const sentencepiece::SentencePieceProcessor* Processor(const void* handle) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(handle);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* tvq_spm_load(const char* path,
                                                          char* error,
                                                          size_t error_size) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const sentencepiece::util::Status status = processor->Load(path);
  if (!status.ok()) {
    CopyError(status.ToString(), error, error_size);
    delete processor;
    return nullptr;
  }
  return processor;
}

__attribute__((visibility("default"))) void tvq_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

__attribute__((visibility("default"))) int tvq_spm_piece_size(
    const void* handle) {
  return Processor(handle)->GetPieceSize();
}

// which: 0 pad, 1 eos, 2 unk, 3 bos. -1 when the model has none.
__attribute__((visibility("default"))) int tvq_spm_special_id(
    const void* handle, int which) {
  const sentencepiece::SentencePieceProcessor* processor = Processor(handle);
  switch (which) {
    case 0:
      return processor->pad_id();
    case 1:
      return processor->eos_id();
    case 2:
      return processor->unk_id();
    case 3:
      return processor->bos_id();
  }
  return -1;
}

__attribute__((visibility("default"))) int tvq_spm_is_control_or_unknown(
    const void* handle, int id) {
  const sentencepiece::SentencePieceProcessor* processor = Processor(handle);
  return processor->IsControl(id) || processor->IsUnknown(id) ? 1 : 0;
}

// On success returns 1 and a malloc'ed array in *ids (free with
// tvq_spm_free_buffer).
__attribute__((visibility("default"))) int tvq_spm_encode(
    const void* handle, const char* text, size_t text_size, int** ids,
    size_t* count, char* error, size_t error_size) {
  std::vector<int> pieces;
  const sentencepiece::util::Status status =
      Processor(handle)->Encode(std::string_view(text, text_size), &pieces);
  if (!status.ok()) {
    CopyError(status.ToString(), error, error_size);
    return 0;
  }
  *count = pieces.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (pieces.size() + 1)));
  if (*ids == nullptr) {
    CopyError("out of memory", error, error_size);
    return 0;
  }
  std::memcpy(*ids, pieces.data(), sizeof(int) * pieces.size());
  return 1;
}

// On success returns 1 and a malloc'ed buffer in *text (not terminated).
__attribute__((visibility("default"))) int tvq_spm_decode(
    const void* handle, const int* ids, size_t count, char** text,
    size_t* text_size, char* error, size_t error_size) {
  const std::vector<int> pieces(ids, ids + count);
  std::string decoded;
  const sentencepiece::util::Status status =
      Processor(handle)->Decode(pieces, &decoded);
  if (!status.ok()) {
    CopyError(status.ToString(), error, error_size);
    return 0;
  }
  *text_size = decoded.size();
  *text = static_cast<char*>(std::malloc(decoded.size() + 1));
  if (*text == nullptr) {
    CopyError("out of memory", error, error_size);
    return 0;
  }
  std::memcpy(*text, decoded.data(), decoded.size());
  return 1;
}

__attribute__((visibility("default"))) void tvq_spm_free_buffer(void* buffer) {
  std::free(buffer);
}

}  // extern "C"
