// Finds stop sequences in streamed text, across token boundaries, and decides
// which text is final: text that could still be the start of a stop sequence
// is held back until the next piece of text settles it.
//
// Input pieces must be valid UTF-8 (IncrementalDetokenizer output); released
// text is then valid UTF-8 too, since a held-back suffix always starts where
// a stop sequence starts.
#ifndef TVQ_SERVER_TEXT_STOP_SEQUENCE_MATCHER_H_
#define TVQ_SERVER_TEXT_STOP_SEQUENCE_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace tvq::runtime {

class StopSequenceMatcher {
 public:
  // Empty stop sequences are ignored.
  explicit StopSequenceMatcher(std::vector<std::string> stop_sequences);

  struct Result {
    // Text that became final (everything before a match, on a match).
    std::string released;
    // True when a stop sequence was found; the matcher then stays stopped.
    bool matched = false;
    // The stop sequence found (the earliest in the text; the longest of
    // those starting there).
    std::string stop_sequence;
  };

  // Adds generated text.
  Result Append(std::string_view text);
  // Releases the held-back text (the generation ended for another reason).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stop_sequences_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_TEXT_STOP_SEQUENCE_MATCHER_H_
