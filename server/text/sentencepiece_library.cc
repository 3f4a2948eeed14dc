#include "server/text/sentencepiece_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/base/shared_module.h"

#ifndef TVQ_SENTENCEPIECE_MODULE_PATH
#define TVQ_SENTENCEPIECE_MODULE_PATH ""
#endif

namespace tvq::runtime {

struct SentencePieceProcessorHandle::Functions {
  void* (*load)(const char*, char*, size_t) = nullptr;
  void (*free_processor)(void*) = nullptr;
  int (*piece_size)(const void*) = nullptr;
  int (*special_id)(const void*, int) = nullptr;
  int (*is_control_or_unknown)(const void*, int) = nullptr;
  int (*encode)(const void*, const char*, size_t, int**, size_t*, char*,
                size_t) = nullptr;
  int (*decode)(const void*, const int*, size_t, char**, size_t*, char*,
                size_t) = nullptr;
  void (*free_buffer)(void*) = nullptr;
};

namespace {

constexpr char kModuleName[] = "libtvq_sentencepiece.so";
// The sanitizer runtimes refuse RTLD_DEEPBIND (google/sanitizers#611) and
// would end the process; say so as an error instead.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerBuild = true;
#else
constexpr bool kSanitizerBuild = false;
#endif
constexpr size_t kErrorSize = 1024;

template <typename Function>
bool Resolve(void* module, const char* name, Function* function) {
  *function = reinterpret_cast<Function>(::dlsym(module, name));
  return *function != nullptr;
}

// Loads the module once; the functions stay valid for the process.
absl::StatusOr<const SentencePieceProcessorHandle::Functions*> LoadModule() {
  static std::once_flag once;
  static absl::StatusOr<const SentencePieceProcessorHandle::Functions*> result =
      absl::UnknownError("not loaded");
  std::call_once(once, [] {
    if (kSanitizerBuild) {
      result = absl::FailedPreconditionError(
          "SentencePiece models cannot be loaded in a sanitizer build: the "
          "module needs dlopen(RTLD_DEEPBIND), which the sanitizers forbid");
      return;
    }
    absl::StatusOr<void*> opened = OpenSharedModule(
        {.file_name = kModuleName,
         .environment_variable = "TVQ_SENTENCEPIECE_MODULE",
         .build_path = TVQ_SENTENCEPIECE_MODULE_PATH,
         .deep_bind = true});
    if (!opened.ok()) {
      result = opened.status();
      return;
    }
    void* module = *opened;
    auto* functions = new SentencePieceProcessorHandle::Functions();
    const bool complete =
        Resolve(module, "tvq_spm_load", &functions->load) &&
        Resolve(module, "tvq_spm_free", &functions->free_processor) &&
        Resolve(module, "tvq_spm_piece_size", &functions->piece_size) &&
        Resolve(module, "tvq_spm_special_id", &functions->special_id) &&
        Resolve(module, "tvq_spm_is_control_or_unknown",
                &functions->is_control_or_unknown) &&
        Resolve(module, "tvq_spm_encode", &functions->encode) &&
        Resolve(module, "tvq_spm_decode", &functions->decode) &&
        Resolve(module, "tvq_spm_free_buffer", &functions->free_buffer);
    if (!complete) {
      delete functions;
      result = absl::FailedPreconditionError(absl::StrCat(
          kModuleName, " lacks a tvq_spm_* function (a stale build?)"));
      return;
    }
    result = functions;
  });
  return result;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceProcessorHandle>>
SentencePieceProcessorHandle::Load(const std::string& path) {
  absl::StatusOr<const Functions*> functions = LoadModule();
  if (!functions.ok()) return functions.status();
  char error[kErrorSize] = {0};
  void* processor = (*functions)->load(path.c_str(), error, sizeof(error));
  if (processor == nullptr) return absl::InvalidArgumentError(error);
  return std::unique_ptr<SentencePieceProcessorHandle>(
      new SentencePieceProcessorHandle(*functions, processor));
}

SentencePieceProcessorHandle::~SentencePieceProcessorHandle() {
  functions_->free_processor(processor_);
}

int SentencePieceProcessorHandle::GetPieceSize() const {
  return functions_->piece_size(processor_);
}
int SentencePieceProcessorHandle::pad_id() const {
  return functions_->special_id(processor_, 0);
}
int SentencePieceProcessorHandle::eos_id() const {
  return functions_->special_id(processor_, 1);
}
int SentencePieceProcessorHandle::unk_id() const {
  return functions_->special_id(processor_, 2);
}
int SentencePieceProcessorHandle::bos_id() const {
  return functions_->special_id(processor_, 3);
}
bool SentencePieceProcessorHandle::IsControlOrUnknown(int id) const {
  return functions_->is_control_or_unknown(processor_, id) != 0;
}

absl::StatusOr<std::vector<int32_t>> SentencePieceProcessorHandle::Encode(
    std::string_view text) const {
  char error[kErrorSize] = {0};
  int* ids = nullptr;
  size_t count = 0;
  if (!functions_->encode(processor_, text.data(), text.size(), &ids, &count,
                          error, sizeof(error))) {
    return absl::InvalidArgumentError(error);
  }
  std::vector<int32_t> out(ids, ids + count);
  functions_->free_buffer(ids);
  return out;
}

absl::StatusOr<std::string> SentencePieceProcessorHandle::Decode(
    const std::vector<int>& ids) const {
  char error[kErrorSize] = {0};
  char* text = nullptr;
  size_t size = 0;
  if (!functions_->decode(processor_, ids.data(), ids.size(), &text, &size,
                          error, sizeof(error))) {
    return absl::InternalError(error);
  }
  std::string out(text, size);
  functions_->free_buffer(text);
  return out;
}

}  // namespace tvq::runtime
