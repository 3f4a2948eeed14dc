#include "server/text/stop_sequence_matcher.h"

#include <algorithm>
#include <utility>

namespace tvq::runtime {

StopSequenceMatcher::StopSequenceMatcher(
    std::vector<std::string> stop_sequences) {
  for (std::string& stop : stop_sequences) {
    if (!stop.empty()) stop_sequences_.push_back(std::move(stop));
  }
}

StopSequenceMatcher::Result StopSequenceMatcher::Append(std::string_view text) {
  Result result;
  if (stopped_) return result;
  pending_.append(text);
  if (stop_sequences_.empty()) {
    result.released = std::move(pending_);
    pending_.clear();
    return result;
  }

  // The earliest match (longest stop on a tie).
  size_t match_at = std::string::npos;
  const std::string* match = nullptr;
  for (const std::string& stop : stop_sequences_) {
    const size_t at = pending_.find(stop);
    if (at == std::string::npos) continue;
    if (at < match_at || (at == match_at && stop.size() > match->size())) {
      match_at = at;
      match = &stop;
    }
  }
  if (match != nullptr) {
    result.released = pending_.substr(0, match_at);
    result.matched = true;
    result.stop_sequence = *match;
    pending_.clear();
    stopped_ = true;
    return result;
  }

  // Hold back the longest suffix of pending_ that is a proper prefix of a
  // stop sequence.
  size_t hold = 0;
  for (const std::string& stop : stop_sequences_) {
    const size_t longest = std::min(stop.size() - 1, pending_.size());
    for (size_t length = longest; length > hold; --length) {
      if (std::string_view(pending_).substr(pending_.size() - length) ==
          std::string_view(stop).substr(0, length)) {
        hold = length;
        break;
      }
    }
  }
  result.released = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopSequenceMatcher::Flush() {
  std::string rest = std::move(pending_);
  pending_.clear();
  return rest;
}

}  // namespace tvq::runtime
