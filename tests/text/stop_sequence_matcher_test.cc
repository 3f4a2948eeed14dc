#include "server/text/stop_sequence_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tvq::runtime {
namespace {

// Feeds pieces; returns the released text and whether a stop matched.
std::pair<std::string, bool> FeedAll(StopSequenceMatcher& matcher,
                                     const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& piece : pieces) {
    auto result = matcher.Append(piece);
    out += result.released;
    if (result.matched) return {out, true};
  }
  out += matcher.Flush();
  return {out, false};
}

TEST(StopSequenceMatcherTest, NoStopsPassesEverythingThrough) {
  StopSequenceMatcher matcher({});
  auto result = matcher.Append("hello");
  EXPECT_EQ(result.released, "hello");
  EXPECT_FALSE(result.matched);
}

TEST(StopSequenceMatcherTest, MatchAcrossPieces) {
  StopSequenceMatcher matcher({"END"});
  auto a = matcher.Append("abcE");
  EXPECT_EQ(a.released, "abc");  // "E" could start "END"
  auto b = matcher.Append("N");
  EXPECT_EQ(b.released, "");
  auto c = matcher.Append("Dxyz");
  EXPECT_TRUE(c.matched);
  EXPECT_EQ(c.released, "");
  EXPECT_EQ(c.stop_sequence, "END");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.Append("more").released, "");
}

TEST(StopSequenceMatcherTest, FalseStartIsReleased) {
  StopSequenceMatcher matcher({"END"});
  EXPECT_EQ(FeedAll(matcher, {"a", "E", "N", "d", "!"}),
            std::make_pair(std::string("aENd!"), false));
}

TEST(StopSequenceMatcherTest, TextBeforeTheStopInTheSamePiece) {
  StopSequenceMatcher matcher({"\n\n"});
  EXPECT_EQ(FeedAll(matcher, {"one\n", "\ntwo"}),
            std::make_pair(std::string("one"), true));
}

TEST(StopSequenceMatcherTest, EarliestMatchWinsLongestOnTies) {
  StopSequenceMatcher matcher({"cd", "bc", "b"});
  auto result = matcher.Append("abcd");
  EXPECT_TRUE(result.matched);
  EXPECT_EQ(result.released, "a");
  EXPECT_EQ(result.stop_sequence, "bc");
}

TEST(StopSequenceMatcherTest, HoldsTheLongestPossiblePrefix) {
  StopSequenceMatcher matcher({"abab"});
  auto a = matcher.Append("xaba");
  EXPECT_EQ(a.released, "x");  // "aba" is a prefix of "abab"
  auto b = matcher.Append("c");
  EXPECT_EQ(b.released, "abac");
  auto c = matcher.Append("ababab");
  EXPECT_TRUE(c.matched);
  EXPECT_EQ(c.released, "");
}

TEST(StopSequenceMatcherTest, MultiByteCharactersAreNeverSplit) {
  // "é" is C3 A9; the stop starts with the same lead byte as "é".
  StopSequenceMatcher matcher({"\xC3\xA8!"});  // "è!"
  auto a = matcher.Append("caf\xC3\xA9");
  EXPECT_EQ(a.released, "caf\xC3\xA9");
  auto b = matcher.Append("\xC3\xA8");
  EXPECT_EQ(b.released, "");  // held: could be "è!"
  auto c = matcher.Append("?");
  EXPECT_EQ(c.released, "\xC3\xA8?");
}

TEST(StopSequenceMatcherTest, EmptyStopsAreIgnored) {
  StopSequenceMatcher matcher({"", "z"});
  EXPECT_EQ(FeedAll(matcher, {"abc"}),
            std::make_pair(std::string("abc"), false));
}

}  // namespace
}  // namespace tvq::runtime
