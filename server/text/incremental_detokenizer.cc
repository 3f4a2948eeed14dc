#include "server/text/incremental_detokenizer.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/base/status_macros.h"
#include "server/base/str_cat.h"
#include "server/text/tokenizer.h"

namespace tvq::runtime {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// SentencePiece decodes an incomplete byte-fallback sequence as U+FFFD per
// byte, and a later piece may complete it: up to three trailing U+FFFD
// (the first bytes of a 4-byte character) are held back until the next id.
constexpr int kMaxHeldReplacementCharacters = 3;

enum class SequenceKind {
  kValid,      // a whole well-formed character
  kIllFormed,  // a maximal ill-formed subpart: one U+FFFD
  kTruncated,  // a well-formed start that runs into the end of the input
};

struct Sequence {
  SequenceKind kind;
  size_t length;
};

// The UTF-8 sequence at `bytes[position]`, following the Unicode Standard's
// table of well-formed byte sequences (Table 3-7) and its "maximal subpart"
// rule for ill-formed ones.
Sequence NextSequence(std::string_view bytes, size_t position) {
  const auto byte_at = [&](size_t index) {
    return static_cast<unsigned char>(bytes[index]);
  };
  const unsigned char lead = byte_at(position);
  if (lead < 0x80) return {SequenceKind::kValid, 1};
  int continuation_bytes = 0;
  unsigned char second_low = 0x80;
  unsigned char second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    continuation_bytes = 1;
  } else if (lead == 0xE0) {
    continuation_bytes = 2;
    second_low = 0xA0;
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    continuation_bytes = 2;
  } else if (lead == 0xED) {
    continuation_bytes = 2;
    second_high = 0x9F;
  } else if (lead == 0xF0) {
    continuation_bytes = 3;
    second_low = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    continuation_bytes = 3;
  } else if (lead == 0xF4) {
    continuation_bytes = 3;
    second_high = 0x8F;
  } else {
    return {SequenceKind::kIllFormed, 1};
  }
  size_t length = 1;
  unsigned char low = second_low;
  unsigned char high = second_high;
  for (int i = 0; i < continuation_bytes; ++i) {
    if (position + length >= bytes.size()) {
      return {SequenceKind::kTruncated, length};
    }
    const unsigned char next = byte_at(position + length);
    if (next < low || next > high) return {SequenceKind::kIllFormed, length};
    low = 0x80;
    high = 0xBF;
    ++length;
  }
  return {SequenceKind::kValid, length};
}

// Appends `bytes` to `out` as valid UTF-8, each ill-formed subpart replaced
// by U+FFFD. A truncated sequence at the end is left unconsumed, unless
// `final`, when it becomes U+FFFD too. Returns the bytes consumed.
size_t AppendAsValidUtf8(std::string_view bytes, bool final, std::string& out) {
  size_t position = 0;
  while (position < bytes.size()) {
    const Sequence sequence = NextSequence(bytes, position);
    switch (sequence.kind) {
      case SequenceKind::kValid:
        out.append(bytes.substr(position, sequence.length));
        break;
      case SequenceKind::kIllFormed:
        out.append(kReplacementCharacter);
        break;
      case SequenceKind::kTruncated:
        if (!final) return position;
        out.append(kReplacementCharacter);
        break;
    }
    position += sequence.length;
  }
  return position;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer)
    : tokenizer_(tokenizer) {}

void IncrementalDetokenizer::FindAnchor() {
  anchor_searched_ = true;
  // Special ids come first in both vocabularies, so this stops within a
  // few ids (3 for bytes and for the SentencePiece models we ship).
  for (int32_t id = 0; id < tokenizer_.vocab_size(); ++id) {
    const int32_t single[] = {id};
    absl::StatusOr<std::string> text = tokenizer_.Decode(single);
    if (!text.ok() || text->empty()) continue;
    bool ascii = true;
    for (char c : *text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (!ascii) continue;
    anchor_id_ = id;
    anchor_text_ = *std::move(text);
    return;
  }
}

absl::StatusOr<bool> IncrementalDetokenizer::IsSilent(int32_t id) {
  auto cached = silent_ids_.find(id);
  if (cached != silent_ids_.end()) return cached->second;
  if (!anchor_searched_) FindAnchor();
  bool silent = false;
  if (anchor_id_ >= 0) {
    const int32_t pair[] = {anchor_id_, id};
    TVQ_ASSIGN_OR_RETURN(const std::string text, tokenizer_.Decode(pair));
    silent = text == anchor_text_;
  } else {
    // No anchor: only validate the id; every id enters the window.
    const int32_t single[] = {id};
    TVQ_RETURN_IF_ERROR(tokenizer_.Decode(single).status());
  }
  silent_ids_.emplace(id, silent);
  return silent;
}

absl::StatusOr<std::string> IncrementalDetokenizer::Append(int32_t id) {
  TVQ_ASSIGN_OR_RETURN(const bool silent, IsSilent(id));
  if (silent) return std::string();

  window_ids_.push_back(id);
  absl::StatusOr<std::string> text = tokenizer_.Decode(window_ids_);
  if (!text.ok()) {
    window_ids_.pop_back();
    return text.status();
  }
  // The text already emitted must still be a prefix of the window's text:
  // true of both tokenizers, checked so that a violation is an error rather
  // than garbled output.
  const size_t fixed_bytes = window_prefix_bytes_ + emitted_in_window_;
  if (text->size() < fixed_bytes ||
      std::string_view(*text).substr(0, fixed_bytes) !=
          std::string_view(window_text_).substr(0, fixed_bytes)) {
    window_ids_.pop_back();
    return absl::InternalError(
        StrCat("incremental detokenizer: decoding token id ", id,
               " changed text that was already emitted"));
  }
  window_text_ = *std::move(text);

  const std::string_view pending =
      std::string_view(window_text_).substr(fixed_bytes);
  size_t usable = pending.size();
  for (int i = 0; i < kMaxHeldReplacementCharacters &&
                  pending.substr(0, usable).ends_with(kReplacementCharacter);
       ++i) {
    usable -= kReplacementCharacter.size();
  }
  std::string delta;
  emitted_in_window_ +=
      AppendAsValidUtf8(pending.substr(0, usable), /*final=*/false, delta);
  emitted_ += delta;
  MaybeRestartWindow();
  return delta;
}

void IncrementalDetokenizer::MaybeRestartWindow() {
  const bool all_emitted =
      window_prefix_bytes_ + emitted_in_window_ == window_text_.size();
  // While the text is still empty, SentencePiece strips leading spaces:
  // the window keeps every id from the start until some text is out.
  if (!all_emitted || emitted_.empty() || anchor_id_ < 0) return;
  window_ids_.assign(1, anchor_id_);
  window_text_ = anchor_text_;
  window_prefix_bytes_ = anchor_text_.size();
  emitted_in_window_ = 0;
}

std::string IncrementalDetokenizer::Finish() {
  const std::string_view pending =
      std::string_view(window_text_)
          .substr(window_prefix_bytes_ + emitted_in_window_);
  std::string delta;
  emitted_in_window_ += AppendAsValidUtf8(pending, /*final=*/true, delta);
  emitted_ += delta;
  MaybeRestartWindow();
  return delta;
}

}  // namespace tvq::runtime
