// Tokenizers (byte, SentencePiece), LoadTokenizer and the incremental
// detokenizer.
#include "server/text/incremental_detokenizer.h"
#include "server/text/tokenizer.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/text/byte_tokenizer.h"
#include "server/model/model_config.h"
#include "server/model/model_dir.h"
#include "server/text/sentencepiece_tokenizer.h"
#include "tests/support/sanitizers.h"

namespace tvq::runtime {
namespace {

using ::testing::HasSubstr;
using namespace std::string_view_literals;

const std::string kDataDir = TVQ_TEST_DATA_DIR;
const std::string kTinyTiedDir = kDataDir + "/golden/tiny-tied/model";
const std::string kTinyTiedModel = kTinyTiedDir + "/tokenizer.model";
const std::string kByteFallbackModel =
    kDataDir + "/tokenizers/byte_fallback.model";

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// A text with 1-, 2-, 3- and 4-byte characters.
constexpr std::string_view kMultiByteText =
    "caf\xC3\xA9 \xE2\x82\xAC"
    "5 \xF0\x9F\x98\x80 \xE6\x97\xA5\xE6\x9C\xAC!";

// Validates UTF-8 independently of the code under test: decodes every
// character to a code point and checks its range and shortest form.
bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    int length = 0;
    uint32_t code_point = 0;
    if (lead < 0x80) {
      length = 1;
      code_point = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2;
      code_point = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      code_point = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      code_point = lead & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (int k = 1; k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code_point < kSmallest[length] || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

// The UTF-8 sequence length a lead byte announces, 0 for a byte that
// cannot start one.
int AnnouncedLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Reference for the detokenizer's output: every maximal ill-formed subpart
// (the longest prefix of a well-formed sequence, or one byte) becomes
// U+FFFD. Written differently from the code under test: candidates are
// checked with IsValidUtf8.
std::string ReferenceSanitize(std::string_view bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const int length = AnnouncedLength(static_cast<unsigned char>(bytes[i]));
    if (length > 0 && i + length <= bytes.size() &&
        IsValidUtf8(bytes.substr(i, length))) {
      out.append(bytes.substr(i, length));
      i += length;
      continue;
    }
    // Longest k < length such that bytes[i, i + k) completes to a valid
    // sequence (filling the rest with 0x80 is enough: only the second byte
    // has a narrowed range).
    size_t subpart = 1;
    for (int k = 2; k < length && i + k <= bytes.size(); ++k) {
      std::string completed(bytes.substr(i, k));
      completed.append(length - k, '\x80');
      if (!IsValidUtf8(completed)) break;
      subpart = k;
    }
    out.append(kReplacement);
    i += subpart;
  }
  return out;
}

// `pattern` with every '#' replaced by U+FFFD.
std::string WithReplacements(std::string_view pattern) {
  std::string text;
  for (char c : pattern) {
    if (c == '#') {
      text.append(kReplacement);
    } else {
      text.push_back(c);
    }
  }
  return text;
}

// Whether `text[index]` is the last byte of a character.
bool EndsCharacter(std::string_view text, size_t index) {
  return index + 1 == text.size() ||
         (static_cast<unsigned char>(text[index + 1]) & 0xC0) != 0x80;
}

std::vector<int32_t> ByteIds(std::string_view bytes) {
  std::vector<int32_t> ids;
  for (char c : bytes) ids.push_back(static_cast<unsigned char>(c) + 3);
  return ids;
}

// Feeds `ids` one by one; checks each delta is valid UTF-8 and that the
// deltas add up to emitted(). Returns the text including Finish().
std::string StreamIds(const Tokenizer& tokenizer,
                      const std::vector<int32_t>& ids,
                      std::vector<std::string>* deltas = nullptr) {
  IncrementalDetokenizer detokenizer(tokenizer);
  std::string text;
  for (int32_t id : ids) {
    absl::StatusOr<std::string> delta = detokenizer.Append(id);
    EXPECT_TRUE(delta.ok()) << "id " << id << ": " << delta.status();
    if (!delta.ok()) return text;
    EXPECT_TRUE(IsValidUtf8(*delta)) << "delta after id " << id;
    text += *delta;
    if (deltas != nullptr) deltas->push_back(*delta);
  }
  const std::string rest = detokenizer.Finish();
  EXPECT_TRUE(IsValidUtf8(rest));
  text += rest;
  EXPECT_EQ(detokenizer.emitted(), text);
  return text;
}

std::unique_ptr<SentencePieceTokenizer> LoadSentencePiece(
    const std::string& path) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(path);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

ModelConfig SentencePieceConfig(const std::string& file, int n_vocab) {
  ModelConfig config;
  config.tokenizer_kind = TokenizerKind::kSentencePiece;
  config.tokenizer_file = file;
  config.n_vocab = n_vocab;
  return config;
}

// ---------------------------------------------------------------- bytes

TEST(ByteTokenizerTest, MapsBytesToIdsPlusThree) {
  ByteTokenizer tokenizer;
  EXPECT_EQ(tokenizer.kind(), TokenizerKind::kByte);
  EXPECT_EQ(tokenizer.vocab_size(), 259);
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode("A\x00\xFF"sv);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{'A' + 3, 3, 258}));
}

TEST(ByteTokenizerTest, RoundTripsMultiByteUtf8) {
  ByteTokenizer tokenizer;
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(kMultiByteText);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), kMultiByteText.size());
  absl::StatusOr<std::string> text = tokenizer.Decode(*ids);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, kMultiByteText);
}

TEST(ByteTokenizerTest, EncodesEmptyTextAsNoIds) {
  ByteTokenizer tokenizer;
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode("");
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->empty());
}

TEST(ByteTokenizerTest, DecodeDropsPadEosUnk) {
  ByteTokenizer tokenizer;
  const std::vector<int32_t> ids = {1, 'h' + 3, 0, 2, 'i' + 3, 1};
  absl::StatusOr<std::string> text = tokenizer.Decode(ids);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "hi");
}

TEST(ByteTokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  ByteTokenizer tokenizer;
  for (int32_t bad_id : {259, 1000, -1}) {
    const std::vector<int32_t> ids = {'a' + 3, bad_id};
    absl::StatusOr<std::string> text = tokenizer.Decode(ids);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(),
                HasSubstr("token id " + std::to_string(bad_id)));
  }
}

TEST(ByteTokenizerTest, DecodeReturnsRawBytesEvenWhenNotUtf8) {
  ByteTokenizer tokenizer;
  absl::StatusOr<std::string> text = tokenizer.Decode(ByteIds("a\xE2\x82"));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "a\xE2\x82");
}

// ----------------------------------------------------------------
// SentencePiece

TEST(SentencePieceTokenizerTest, RoundTripsEnglishWithoutAddingEos) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->kind(), TokenizerKind::kSentencePiece);
  EXPECT_EQ(tokenizer->vocab_size(), 300);
  EXPECT_EQ(tokenizer->pad_id(), 0);
  EXPECT_EQ(tokenizer->eos_id(), 1);
  EXPECT_EQ(tokenizer->unk_id(), 2);
  EXPECT_EQ(tokenizer->bos_id(), -1);

  const std::string text =
      "The model reads the text, then it writes more of the same.";
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_FALSE(ids->empty());
  EXPECT_LT(ids->size(), text.size()) << "pieces should merge characters";
  for (int32_t id : *ids) {
    EXPECT_GE(id, 3) << "no pad, eos or unk in plain English text";
    EXPECT_LT(id, 300);
  }
  absl::StatusOr<std::string> decoded = tokenizer->Decode(*ids);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, text);
}

TEST(SentencePieceTokenizerTest, DecodeDropsControlAndUnknownIds) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode("a test");
  ASSERT_TRUE(ids.ok());
  std::vector<int32_t> with_specials = {1};
  for (int32_t id : *ids) {
    with_specials.push_back(id);
    with_specials.push_back(2);
  }
  with_specials.push_back(0);
  absl::StatusOr<std::string> decoded = tokenizer->Decode(with_specials);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, "a test");
}

TEST(SentencePieceTokenizerTest, UnknownCharactersEncodeAsUnk) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  absl::StatusOr<std::vector<int32_t>> ids =
      tokenizer->Encode("\xE6\x97\xA5");  // a CJK character
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ::testing::Contains(2));
}

TEST(SentencePieceTokenizerTest, DecodeRejectsIdsOutsideTheVocabulary) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  for (int32_t bad_id : {300, -5}) {
    const std::vector<int32_t> ids = {10, bad_id};
    absl::StatusOr<std::string> text = tokenizer->Decode(ids);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(),
                HasSubstr("token id " + std::to_string(bad_id)));
  }
}

TEST(SentencePieceTokenizerTest, MissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(kDataDir + "/no-such.model");
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("no-such.model"));
}

TEST(SentencePieceTokenizerTest, GarbageFileIsDataLoss) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  const std::filesystem::path path =
      std::filesystem::path(::testing::TempDir()) / "garbage.model";
  std::ofstream(path) << "this is not a protobuf";
  absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> tokenizer =
      SentencePieceTokenizer::Load(path.string());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("garbage.model"));
  std::filesystem::remove(path);
}

// ----------------------------------------------------------------
// LoadTokenizer

TEST(LoadTokenizerTest, BytesNeedNoFile) {
  ModelConfig config;
  config.n_vocab = 259;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(config, "/nonexistent");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->kind(), TokenizerKind::kByte);
}

TEST(LoadTokenizerTest, LoadsSentencePieceFromTheModelDirectory) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(SentencePieceConfig("tokenizer.model", 300), kTinyTiedDir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->kind(), TokenizerKind::kSentencePiece);
  EXPECT_EQ((*tokenizer)->vocab_size(), 300);
}

TEST(LoadTokenizerTest, VocabularyLargerThanNVocabIsAnError) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(SentencePieceConfig("tokenizer.model", 299), kTinyTiedDir);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("n_vocab"));
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.model"));
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("300 pieces"));
}

TEST(LoadTokenizerTest, SpecialIdsMustMatchTheConfig) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  ModelConfig config = SentencePieceConfig("tokenizer.model", 300);
  config.eos_id = 3;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(config, kTinyTiedDir);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("eos_id"));
}

TEST(LoadTokenizerTest, MissingSentencePieceFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizer(SentencePieceConfig("absent.model", 300), kTinyTiedDir);
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("absent.model"));
}

// ---------------------------------------------------------------- streaming

TEST(IncrementalDetokenizerTest, BytesStreamWholeCharactersOnly) {
  ByteTokenizer tokenizer;
  const std::vector<int32_t> ids = ByteIds(kMultiByteText);
  std::vector<std::string> deltas;
  EXPECT_EQ(StreamIds(tokenizer, ids, &deltas), kMultiByteText);
  ASSERT_EQ(deltas.size(), kMultiByteText.size());
  // A character appears exactly when its last byte arrives, whole.
  for (size_t i = 0; i < deltas.size(); ++i) {
    EXPECT_EQ(deltas[i].empty(), !EndsCharacter(kMultiByteText, i))
        << "byte " << i;
  }
}

TEST(IncrementalDetokenizerTest, InvalidBytesBecomeReplacementCharacters) {
  ByteTokenizer tokenizer;
  // A lone continuation byte, a lead byte cut short by ASCII, an overlong
  // encoding, a surrogate, an invalid byte.
  const std::string input =
      "a\x80"
      "b\xC3"
      "c\xC0\xAF"
      "d\xED\xA0\x80"
      "e\xFF"
      "f";
  const std::string expected = WithReplacements("a#b#c##d###e#f");
  EXPECT_EQ(StreamIds(tokenizer, ByteIds(input)), expected);
}

TEST(IncrementalDetokenizerTest, HoldsAnIncompleteTailUntilFinish) {
  ByteTokenizer tokenizer;
  IncrementalDetokenizer detokenizer(tokenizer);
  absl::StatusOr<std::string> delta = detokenizer.Append('a' + 3);
  ASSERT_TRUE(delta.ok());
  EXPECT_EQ(*delta, "a");
  delta = detokenizer.Append(0xE2 + 3);
  ASSERT_TRUE(delta.ok());
  EXPECT_EQ(*delta, "");
  delta = detokenizer.Append(0x82 + 3);
  ASSERT_TRUE(delta.ok());
  EXPECT_EQ(*delta, "");
  EXPECT_EQ(detokenizer.Finish(), kReplacement);
  EXPECT_EQ(detokenizer.emitted(), WithReplacements("a#"));
}

TEST(IncrementalDetokenizerTest, SpecialIdsAddNothing) {
  ByteTokenizer tokenizer;
  const std::vector<int32_t> ids = {1, 0xC3 + 3, 1, 0xA9 + 3, 0, 'x' + 3, 2};
  EXPECT_EQ(StreamIds(tokenizer, ids), "\xC3\xA9x");
}

TEST(IncrementalDetokenizerTest, BadIdIsAnErrorAndTheStreamGoesOn) {
  ByteTokenizer tokenizer;
  IncrementalDetokenizer detokenizer(tokenizer);
  ASSERT_TRUE(detokenizer.Append(0xC3 + 3).ok());
  absl::StatusOr<std::string> delta = detokenizer.Append(259);
  EXPECT_EQ(delta.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(delta.status().message(), HasSubstr("259"));
  delta = detokenizer.Append(0xA9 + 3);
  ASSERT_TRUE(delta.ok());
  EXPECT_EQ(*delta, "\xC3\xA9");
}

TEST(IncrementalDetokenizerTest, RandomBytesMatchTheSanitizedFullDecode) {
  ByteTokenizer tokenizer;
  std::mt19937 random(1234);
  // Mostly UTF-8 lead and continuation bytes, so that sequences form, break
  // and get cut in every way.
  std::uniform_int_distribution<int> choice(0, 9);
  std::uniform_int_distribution<int> any_byte(0, 255);
  for (int round = 0; round < 200; ++round) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 40; ++i) {
      const int kind = choice(random);
      int byte = any_byte(random);
      if (kind < 4) byte = 0x80 | (byte & 0x3F);  // continuation
      if (kind == 4) byte = 0xE0 | (byte & 0x0F);
      if (kind == 5) byte = 0xF0 | (byte & 0x07);
      ids.push_back(kind == 9 ? byte % 3 : byte + 3);
    }
    absl::StatusOr<std::string> raw = tokenizer.Decode(ids);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(StreamIds(tokenizer, ids), ReferenceSanitize(*raw))
        << "seed 1234 round " << round;
  }
}

TEST(IncrementalDetokenizerTest, ValidRandomUtf8StreamsUnchanged) {
  ByteTokenizer tokenizer;
  std::mt19937 random(99);
  const std::vector<std::string> characters = {"a",
                                               " ",
                                               "\xC3\xA9",
                                               "\xE2\x82\xAC",
                                               "\xF0\x9F\x98\x80",
                                               "\xE6\x97\xA5",
                                               "\xEF\xBF\xBD"};
  std::uniform_int_distribution<size_t> pick(0, characters.size() - 1);
  std::string text;
  for (int i = 0; i < 500; ++i) text += characters[pick(random)];
  EXPECT_EQ(StreamIds(tokenizer, ByteIds(text)), text);
}

TEST(IncrementalDetokenizerTest, SentencePieceMatchesFullDecode) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  const std::string text =
      "It was the best of times, it was the worst of times.  Then  the "
      "rain came, and the  streets ran with water.";
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
  ASSERT_TRUE(ids.ok());
  std::vector<int32_t> stream = {1};  // eos first, as generation starts
  for (size_t i = 0; i < ids->size(); ++i) {
    stream.push_back((*ids)[i]);
    if (i % 7 == 3) stream.push_back(1);   // eos inside (ignore_eos)
    if (i % 11 == 5) stream.push_back(2);  // unk
  }
  absl::StatusOr<std::string> full = tokenizer->Decode(stream);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(StreamIds(*tokenizer, stream), *full);
  // Leading spaces of pieces survive the windowing.
  EXPECT_EQ(*full,
            "It was the best of times, it was the worst of times. Then "
            "the rain came, and the streets ran with water.");
}

TEST(IncrementalDetokenizerTest, SentencePieceRandomIdsMatchFullDecode) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  std::mt19937 random(7);
  std::uniform_int_distribution<int32_t> any_id(0, 299);
  for (int round = 0; round < 50; ++round) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 60; ++i) ids.push_back(any_id(random));
    absl::StatusOr<std::string> full = tokenizer->Decode(ids);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(StreamIds(*tokenizer, ids), *full) << "seed 7 round " << round;
  }
}

TEST(IncrementalDetokenizerTest, SentencePieceSpacePiecesAndSpecials) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  // "▁" (220) alone decodes to nothing at the start of the text but to a
  // space after it; the windowing must keep both behaviours.
  constexpr int32_t kSpace = 220;
  absl::StatusOr<std::vector<int32_t>> the = tokenizer->Encode("the");
  ASSERT_TRUE(the.ok());
  ASSERT_EQ(the->size(), 1u);
  const std::vector<int32_t> ids = {
      1, kSpace, 1, kSpace, (*the)[0], kSpace, 0, kSpace, (*the)[0], 2, kSpace};
  absl::StatusOr<std::string> full = tokenizer->Decode(ids);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(*full, "the   the ");  // "the", " ", " ", " the", " "
  EXPECT_EQ(StreamIds(*tokenizer, ids), *full);
}

TEST(IncrementalDetokenizerTest, SentencePieceRandomIdsRichInSpecials) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kTinyTiedModel);
  ASSERT_NE(tokenizer, nullptr);
  std::mt19937 random(5);
  std::uniform_int_distribution<int> choice(0, 9);
  std::uniform_int_distribution<int32_t> any_id(0, 299);
  for (int round = 0; round < 100; ++round) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 30; ++i) {
      const int kind = choice(random);
      ids.push_back(kind < 3 ? 220 : kind < 5 ? kind - 3 : any_id(random));
    }
    absl::StatusOr<std::string> full = tokenizer->Decode(ids);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(StreamIds(*tokenizer, ids), *full) << "seed 5 round " << round;
  }
}

// A real byte tokenizer that counts the ids it is asked to decode.
class CountingByteTokenizer final : public Tokenizer {
 public:
  TokenizerKind kind() const override { return bytes_.kind(); }
  int vocab_size() const override { return bytes_.vocab_size(); }
  absl::StatusOr<std::vector<int32_t>> Encode(
      std::string_view text) const override {
    return bytes_.Encode(text);
  }
  absl::StatusOr<std::string> Decode(
      std::span<const int32_t> ids) const override {
    decoded_ids_ += static_cast<int64_t>(ids.size());
    return bytes_.Decode(ids);
  }
  int64_t decoded_ids() const { return decoded_ids_; }

 private:
  ByteTokenizer bytes_;
  mutable int64_t decoded_ids_ = 0;
};

TEST(IncrementalDetokenizerTest, DecodingWorkIsLinearInTheLength) {
  CountingByteTokenizer tokenizer;
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "ab\xC3\xA9\xF0\x9F\x98\x80 ";
  std::vector<int32_t> ids = ByteIds(text);
  // Runs of specials must not grow the window either.
  ids.insert(ids.begin() + 100, 5000, 1);
  EXPECT_EQ(StreamIds(tokenizer, ids), text);
  EXPECT_LT(tokenizer.decoded_ids(), 10 * static_cast<int64_t>(ids.size()));
}

TEST(IncrementalDetokenizerTest, SentencePieceByteFallbackNeverSplits) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kByteFallbackModel);
  ASSERT_NE(tokenizer, nullptr);
  const std::string text(kMultiByteText);
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_GT(ids->size(), 10u) << "the emoji and CJK should be byte pieces";
  std::vector<std::string> deltas;
  EXPECT_EQ(StreamIds(*tokenizer, *ids, &deltas), text);
  for (const std::string& delta : deltas) {
    EXPECT_EQ(delta.find(kReplacement), std::string::npos)
        << "a partial character leaked as U+FFFD";
  }
}

TEST(IncrementalDetokenizerTest, SentencePieceByteFallbackRandomIds) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<SentencePieceTokenizer> tokenizer =
      LoadSentencePiece(kByteFallbackModel);
  ASSERT_NE(tokenizer, nullptr);
  const int vocab_size = tokenizer->vocab_size();
  // Byte pieces <0x00>..<0xFF> follow the three specials in this model.
  std::mt19937 random(11);
  std::uniform_int_distribution<int> choice(0, 9);
  std::uniform_int_distribution<int32_t> any_id(0, vocab_size - 1);
  std::uniform_int_distribution<int32_t> high_byte(0x80, 0xFF);
  for (int round = 0; round < 100; ++round) {
    std::vector<int32_t> ids;
    for (int i = 0; i < 50; ++i) {
      ids.push_back(choice(random) < 6 ? 3 + high_byte(random)
                                       : any_id(random));
    }
    absl::StatusOr<std::string> full = tokenizer->Decode(ids);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(StreamIds(*tokenizer, ids), *full) << "seed 11 round " << round;
  }
}

}  // namespace
}  // namespace tvq::runtime
