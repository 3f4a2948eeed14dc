// libFuzzer target: the stop-sequence matcher (server/text/
// stop_sequence_matcher.h). The input is split at 0xff bytes: the first up to
// four pieces are stop sequences, the rest text pieces appended in turn. The
// matcher must release exactly the text before the earliest stop sequence
// (the longest of those starting there) and report it, or, with no match,
// release everything by Flush().
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "server/text/stop_sequence_matcher.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "stop matcher fuzzer: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> pieces(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0xff) {
      pieces.emplace_back();
    } else {
      pieces.back().push_back(static_cast<char>(data[i]));
    }
  }
  const size_t stop_count = pieces.size() < 4 ? pieces.size() / 2 : 4;
  const std::vector<std::string> stops(pieces.begin(),
                                       pieces.begin() + stop_count);
  tvq::runtime::StopSequenceMatcher matcher(stops);

  std::string text;      // everything appended
  std::string released;  // everything released
  bool matched = false;
  std::string matched_stop;
  for (size_t i = stop_count; i < pieces.size() && !matched; ++i) {
    text += pieces[i];
    auto result = matcher.Append(pieces[i]);
    released += result.released;
    if (result.matched) {
      matched = true;
      matched_stop = result.stop_sequence;
    }
  }
  if (matched != matcher.stopped()) Fail("stopped() disagrees with Append");

  // Where the earliest stop sequence starts in the text, and the longest
  // starting there.
  size_t earliest = std::string::npos;
  std::string expected_stop;
  for (const std::string& stop : stops) {
    if (stop.empty()) continue;
    const size_t at = text.find(stop);
    if (at == std::string::npos) continue;
    if (at < earliest ||
        (at == earliest && stop.size() > expected_stop.size())) {
      earliest = at;
      expected_stop = stop;
    }
  }
  if (matched) {
    if (earliest == std::string::npos) Fail("a match where there is none");
    if (released != text.substr(0, earliest)) {
      Fail("released text is not the text before the stop sequence");
    }
    if (matched_stop != expected_stop) Fail("the wrong stop sequence");
  } else {
    if (earliest != std::string::npos) Fail("a stop sequence was missed");
    released += matcher.Flush();
    if (released != text) Fail("Flush() did not release the rest");
  }
  return 0;
}
