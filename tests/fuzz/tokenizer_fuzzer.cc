// libFuzzer target: the byte tokenizer and the incremental detokenizer
// (server/text/). The first half of the input is text: Encode then Decode
// must give it back. The second half is a stream of 16-bit token ids (some
// outside the vocabulary) fed to IncrementalDetokenizer one by one, as the
// scheduler feeds generated ids: every delta must be valid UTF-8, and when
// the ids decode to valid UTF-8 the deltas plus Finish() must be exactly that
// text. (SentencePiece models cannot be loaded in sanitizer builds, see
// tests/support/sanitizers.h, so only the byte tokenizer is fuzzed here.)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "server/text/byte_tokenizer.h"
#include "server/text/incremental_detokenizer.h"
#include "server/text/utf8.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "tokenizer fuzzer: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tvq::runtime::ByteTokenizer tokenizer;
  const size_t half = size / 2;
  const std::string_view text(reinterpret_cast<const char*>(data), half);

  auto ids = tokenizer.Encode(text);
  if (!ids.ok()) Fail("Encode refused text");
  for (int32_t id : *ids) {
    if (id < 0 || id >= tokenizer.vocab_size()) Fail("id outside vocabulary");
  }
  auto decoded = tokenizer.Decode(*ids);
  if (!decoded.ok() || *decoded != text) Fail("Decode(Encode(text)) != text");

  std::vector<int32_t> stream;
  for (size_t i = half; i + 1 < size; i += 2) {
    // Mostly ids inside the vocabulary, some just outside either end.
    const int raw = data[i] | (data[i + 1] << 8);
    stream.push_back(raw % (tokenizer.vocab_size() + 4) - 2);
  }
  tvq::runtime::IncrementalDetokenizer detokenizer(tokenizer);
  std::string deltas;
  std::vector<int32_t> accepted;
  for (int32_t id : stream) {
    auto delta = detokenizer.Append(id);
    if (!delta.ok()) {
      if (id >= 0 && id < tokenizer.vocab_size()) Fail("valid id refused");
      break;
    }
    if (id < 0 || id >= tokenizer.vocab_size()) Fail("invalid id accepted");
    if (!tvq::runtime::IsValidUtf8(*delta)) Fail("delta is not valid UTF-8");
    deltas += *delta;
    accepted.push_back(id);
  }
  const std::string tail = detokenizer.Finish();
  if (!tvq::runtime::IsValidUtf8(tail)) Fail("Finish() is not valid UTF-8");
  deltas += tail;
  auto full = tokenizer.Decode(accepted);
  if (!full.ok()) Fail("Decode refused accepted ids");
  if (tvq::runtime::IsValidUtf8(*full) && deltas != *full) {
    Fail("deltas differ from the full decode");
  }
  return 0;
}
