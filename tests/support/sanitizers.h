// What a sanitizer build of the tests cannot do, and the skip that says so.
//
// SentencePiece models are tokenized through a module loaded with
// dlopen(RTLD_DEEPBIND) (server/text/sentencepiece_library.cc), which the
// ASan and TSan runtimes refuse (google/sanitizers#611); the server then
// reports FAILED_PRECONDITION instead of loading the model. Tests that load a
// SentencePiece model (tiny-tied, the byte-fallback tokenizer) skip with that
// reason in such builds instead of failing.
#ifndef TVQ_TESTS_SUPPORT_SANITIZERS_H_
#define TVQ_TESTS_SUPPORT_SANITIZERS_H_

#include "gtest/gtest.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TVQ_ADDRESS_OR_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TVQ_ADDRESS_OR_THREAD_SANITIZER 1
#endif
#endif
#ifndef TVQ_ADDRESS_OR_THREAD_SANITIZER
#define TVQ_ADDRESS_OR_THREAD_SANITIZER 0
#endif

namespace tvq::testing {

inline constexpr bool kSanitizerBuild = TVQ_ADDRESS_OR_THREAD_SANITIZER;
inline constexpr char kNoSentencePieceInSanitizerBuilds[] =
    "SentencePiece models cannot be loaded in an ASan/TSan build: the "
    "tokenizer module needs dlopen(RTLD_DEEPBIND), which the sanitizer "
    "runtimes refuse (google/sanitizers#611)";

}  // namespace tvq::testing

// First statement of a test that loads a SentencePiece model.
#define TVQ_SKIP_WITHOUT_SENTENCEPIECE()                                 \
  do {                                                                   \
    if (::tvq::testing::kSanitizerBuild) {                               \
      GTEST_SKIP() << ::tvq::testing::kNoSentencePieceInSanitizerBuilds; \
    }                                                                    \
  } while (0)

#endif  // TVQ_TESTS_SUPPORT_SANITIZERS_H_
