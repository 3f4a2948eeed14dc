// Incremental detokenization of a generated id stream into valid UTF-8.
#ifndef TVQ_SERVER_TEXT_INCREMENTAL_DETOKENIZER_H_
#define TVQ_SERVER_TEXT_INCREMENTAL_DETOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/tokenizer.h"

namespace tvq::runtime {

// Turns a stream of generated ids into text deltas that are always valid
// UTF-8: an incomplete trailing sequence is held back until the bytes that
// complete it arrive; invalid bytes become U+FFFD.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer);
  // Adds one id and returns the text that became final (possibly empty).
  absl::StatusOr<std::string> Append(int32_t id);
  // Returns whatever is held back (an incomplete sequence becomes U+FFFD).
  std::string Finish();
  // Text emitted so far (the concatenation of every returned delta).
  const std::string& emitted() const { return emitted_; }

 private:
  // Picks the anchor: an id whose text is non-empty plain ASCII.
  void FindAnchor();
  // Whether `id` adds nothing after the anchor's text (pad, eos, unk,
  // control pieces): such ids never enter the window. Errors for ids the
  // tokenizer rejects.
  absl::StatusOr<bool> IsSilent(int32_t id);
  // Once everything decoded is emitted (and some text was), restarts the
  // window as [anchor].
  void MaybeRestartWindow();

  const Tokenizer& tokenizer_;
  // The anchor stands in for all the text emitted so far: decoding
  // [anchor, pending ids] and dropping the anchor's text yields the pending
  // ids' text as the full decode has it (SentencePiece strips a piece's
  // leading space only at the start of the text, and byte-fallback runs
  // restart after a complete character). The window stays short, so a token
  // costs O(1) decoding, not O(length).
  bool anchor_searched_ = false;
  int32_t anchor_id_ = -1;  // -1: none found; the window then only grows
  std::string anchor_text_;
  // [anchor] + the ids whose text is not all emitted; while nothing has
  // been emitted yet, every non-silent id since the start, no anchor.
  std::vector<int32_t> window_ids_;
  // Bytes at the start of window_text_ that belong to the anchor.
  size_t window_prefix_bytes_ = 0;
  // Decode(window_ids_) as of the last Append.
  std::string window_text_;
  // Bytes of window_text_ after the prefix that were already emitted.
  size_t emitted_in_window_ = 0;
  std::unordered_map<int32_t, bool> silent_ids_;
  std::string emitted_;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_INCREMENTAL_DETOKENIZER_H_
