// XXH64 against the reference vectors of the xxhash project; file
// fingerprints of the golden models differ between models and are stable;
// the token hash extends turn by turn.
#include "server/sessions/fingerprint.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tvq::sessions {
namespace {

TEST(FingerprintTest, Xxh64ReferenceVectors) {
  EXPECT_EQ(Xxh64(""), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(Xxh64("a"), 0xD24EC4F1A98C6E5BULL);
  EXPECT_EQ(Xxh64("abc"), 0x44BC2CF5AD770999ULL);
  EXPECT_EQ(Xxh64("Nobody inspects the spammish repetition"),
            0xFBCEA83C8A378BF1ULL);
  EXPECT_EQ(Xxh64("abc", 1), 0xBEA9CA8199328908ULL);
}

TEST(FingerprintTest, GoldenModelsDifferAndAreStable) {
  const std::string root = std::string(TVQ_TEST_DATA_DIR) + "/golden/";
  absl::StatusOr<ModelFingerprints> byte =
      FingerprintModelDir(root + "tiny-byte/model", 259);
  absl::StatusOr<ModelFingerprints> noagg =
      FingerprintModelDir(root + "tiny-noagg/model", 259);
  absl::StatusOr<ModelFingerprints> tied =
      FingerprintModelDir(root + "tiny-tied/model", 259);
  ASSERT_TRUE(byte.ok()) << byte.status();
  ASSERT_TRUE(noagg.ok()) << noagg.status();
  ASSERT_TRUE(tied.ok()) << tied.status();
  EXPECT_NE(byte->model, noagg->model);
  EXPECT_NE(byte->model, tied->model);
  EXPECT_EQ(byte->tokenizer, noagg->tokenizer);  // both byte tokenizers
  EXPECT_NE(byte->tokenizer, tied->tokenizer);   // a SentencePiece model
  absl::StatusOr<ModelFingerprints> again =
      FingerprintModelDir(root + "tiny-byte/model", 259);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->model, byte->model);
  const absl::StatusOr<ModelFingerprints> missing =
      FingerprintModelDir(root + "no-such-model", 259);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("config.json"), std::string::npos);
}

TEST(FingerprintTest, TokenHashExtendsTurnByTurn) {
  const std::vector<int32_t> all = {1, 2, 3, 400, -1, 7};
  const uint64_t whole = ExtendTokenHash(kEmptyTokenHash, all);
  const std::vector<int32_t> first(all.begin(), all.begin() + 2);
  const std::vector<int32_t> rest(all.begin() + 2, all.end());
  EXPECT_EQ(ExtendTokenHash(ExtendTokenHash(kEmptyTokenHash, first), rest),
            whole);
  EXPECT_NE(ExtendTokenHash(kEmptyTokenHash, rest), whole);
}

}  // namespace
}  // namespace tvq::sessions
