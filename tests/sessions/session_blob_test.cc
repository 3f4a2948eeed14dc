// The session blob: a round trip keeps every field; each check of
// DecodeSessionBlob fails with its own status; a flipped byte at every
// offset, every truncation and random garbage are refused without a crash.
#include "server/sessions/session_blob.h"

#include <zlib.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace tvq::sessions {
namespace {

BlobIdentity Identity() {
  BlobIdentity identity;
  identity.model_fingerprint = 0x1122334455667788ULL;
  identity.tokenizer_fingerprint = 0x99aabbccddeeff00ULL;
  identity.num_sublayers = 4;
  identity.n_head = 1;
  identity.n_code = 32;
  identity.mem_len = 8;
  identity.d_v = 16;
  identity.n_vocab = 259;
  identity.state_bytes = 333;
  return identity;
}

SessionSnapshot Snapshot() {
  SessionSnapshot snapshot;
  std::string state(333, '\0');
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<char>(i * 7);
  snapshot.state = std::make_shared<const std::string>(state);
  snapshot.position = 41;
  snapshot.token_count = 42;
  snapshot.pending_token = 258;
  snapshot.token_hash = 0xfeedfacecafebeefULL;
  return snapshot;
}

void PutU32(std::string& blob, size_t offset, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    blob[offset + i] = static_cast<char>(value >> (8 * i));
}
void PutU64(std::string& blob, size_t offset, uint64_t value) {
  for (int i = 0; i < 8; ++i)
    blob[offset + i] = static_cast<char>(value >> (8 * i));
}
// Recomputes the trailing CRC (a crafted, consistent-looking blob).
void Reseal(std::string& blob) {
  const size_t body = blob.size() - 4;
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(blob.data()), body));
  PutU32(blob, body, crc);
}

TEST(SessionBlobTest, RoundTripKeepsEveryField) {
  const SessionSnapshot snapshot = Snapshot();
  const std::string blob = EncodeSessionBlob(snapshot, Identity());
  EXPECT_EQ(blob.size(), kBlobHeaderBytes + 333 + kBlobChecksumBytes);
  EXPECT_EQ(blob.substr(0, 8), std::string("TVQSESS\0", 8));
  absl::StatusOr<SessionSnapshot> decoded = DecodeSessionBlob(blob, Identity());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded->state, *snapshot.state);
  EXPECT_EQ(decoded->position, 41);
  EXPECT_EQ(decoded->token_count, 42);
  EXPECT_EQ(decoded->pending_token, 258);
  EXPECT_EQ(decoded->token_hash, 0xfeedfacecafebeefULL);
}

TEST(SessionBlobTest, EmptySessionRoundTrips) {
  SessionSnapshot empty;
  empty.token_hash = 5;
  const std::string blob = EncodeSessionBlob(empty, Identity());
  absl::StatusOr<SessionSnapshot> decoded = DecodeSessionBlob(blob, Identity());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->state, nullptr);
  EXPECT_EQ(decoded->token_count, 0);
  EXPECT_EQ(decoded->pending_token, -1);
  // One pending token and no state yet.
  empty.pending_token = 7;
  empty.token_count = 1;
  decoded = DecodeSessionBlob(EncodeSessionBlob(empty, Identity()), Identity());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->pending_token, 7);
}

TEST(SessionBlobTest, FlippedByteAtEveryOffsetIsRefused) {
  const std::string blob = EncodeSessionBlob(Snapshot(), Identity());
  for (size_t offset = 0; offset < blob.size(); ++offset) {
    for (unsigned char mask : {0x01, 0x80, 0xff}) {
      std::string flipped = blob;
      flipped[offset] = static_cast<char>(flipped[offset] ^ mask);
      absl::StatusOr<SessionSnapshot> decoded =
          DecodeSessionBlob(flipped, Identity());
      ASSERT_FALSE(decoded.ok()) << "offset " << offset;
      const absl::StatusCode expected =
          offset < 12 ? absl::StatusCode::kInvalidArgument  // magic, version
                      : absl::StatusCode::kDataLoss;        // checksum
      EXPECT_EQ(decoded.status().code(), expected)
          << "offset " << offset << ": " << decoded.status();
    }
  }
}

TEST(SessionBlobTest, EveryTruncationIsDataLoss) {
  const std::string blob = EncodeSessionBlob(Snapshot(), Identity());
  for (size_t length = 0; length < blob.size(); ++length) {
    absl::StatusOr<SessionSnapshot> decoded =
        DecodeSessionBlob(blob.substr(0, length), Identity());
    ASSERT_FALSE(decoded.ok()) << "length " << length;
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss)
        << "length " << length << ": " << decoded.status();
  }
  // Extra bytes at the end are refused too.
  EXPECT_EQ(DecodeSessionBlob(blob + "x", Identity()).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(SessionBlobTest, RandomGarbageIsRefused) {
  std::mt19937_64 random(13);
  const std::string blob = EncodeSessionBlob(Snapshot(), Identity());
  for (int trial = 0; trial < 3000; ++trial) {
    const size_t length = random() % (2 * blob.size());
    std::string garbage(length, '\0');
    for (char& c : garbage) c = static_cast<char>(random());
    if (trial % 2 == 1 && length >= 12) {
      garbage.replace(0, 12, blob.substr(0, 12));  // a valid magic + version
    }
    if (trial % 4 == 3 && length >= 4) Reseal(garbage);  // and a valid CRC
    absl::StatusOr<SessionSnapshot> decoded =
        DecodeSessionBlob(garbage, Identity());
    EXPECT_FALSE(decoded.ok()) << "trial " << trial;
  }
}

struct Crafted {
  const char* what;
  size_t offset;
  int width;  // 4 or 8
  uint64_t value;
  absl::StatusCode code;
  const char* message;
};

TEST(SessionBlobTest, EachFieldHasItsOwnStatus) {
  const Crafted cases[] = {
      {"version", 8, 4, 7, absl::StatusCode::kInvalidArgument, "version 7"},
      {"header length", 12, 4, 100, absl::StatusCode::kInvalidArgument,
       "header length 100"},
      {"model", 16, 8, 0xabcdef, absl::StatusCode::kFailedPrecondition,
       "model fingerprint 0000000000abcdef, this server's model is "
       "1122334455667788"},
      {"tokenizer", 24, 8, 1, absl::StatusCode::kFailedPrecondition,
       "tokenizer fingerprint 0000000000000001"},
      {"sublayers", 32, 4, 6, absl::StatusCode::kFailedPrecondition,
       "attention sublayers = 6, this model has 4"},
      {"n_head", 36, 4, 2, absl::StatusCode::kFailedPrecondition, "n_head"},
      {"n_code", 40, 4, 64, absl::StatusCode::kFailedPrecondition, "n_code"},
      {"mem_len", 44, 4, 16, absl::StatusCode::kFailedPrecondition, "mem_len"},
      {"d_v", 48, 4, 8, absl::StatusCode::kFailedPrecondition, "d_v"},
      {"n_vocab", 52, 4, 300, absl::StatusCode::kFailedPrecondition, "n_vocab"},
      {"dtypes", 56, 4, 2, absl::StatusCode::kInvalidArgument, "dtypes code 2"},
      {"pending", 60, 4, 259, absl::StatusCode::kInvalidArgument,
       "pending token 259"},
      {"pending negative", 60, 4, 0xfffffffe,
       absl::StatusCode::kInvalidArgument, "pending token -2"},
      {"position", 64, 8, 40, absl::StatusCode::kInvalidArgument,
       "token count 42 does not match position 40"},
      {"token count", 72, 8, 1000, absl::StatusCode::kInvalidArgument,
       "token count 1000"},
      // position + 1 must not overflow (found by session_blob_fuzzer's
      // harness: tests/fuzz/regressions/session_blob/).
      {"position int64 max", 64, 8, uint64_t{INT64_MAX},
       absl::StatusCode::kInvalidArgument,
       "does not match position 9223372036854775807"},
      {"negative token count", 72, 8, uint64_t{1} << 63,
       absl::StatusCode::kInvalidArgument,
       "token count -9223372036854775808"},
      {"state length", 88, 8, 332, absl::StatusCode::kInvalidArgument,
       "332 bytes, the blob holds 333"},
      {"huge state length", 88, 8, ~uint64_t{0},
       absl::StatusCode::kInvalidArgument, "the blob holds 333"},
  };
  const std::string blob = EncodeSessionBlob(Snapshot(), Identity());
  for (const Crafted& crafted : cases) {
    std::string changed = blob;
    if (crafted.width == 4) {
      PutU32(changed, crafted.offset, static_cast<uint32_t>(crafted.value));
    } else {
      PutU64(changed, crafted.offset, crafted.value);
    }
    Reseal(changed);
    absl::StatusOr<SessionSnapshot> decoded =
        DecodeSessionBlob(changed, Identity());
    ASSERT_FALSE(decoded.ok()) << crafted.what;
    EXPECT_EQ(decoded.status().code(), crafted.code)
        << crafted.what << ": " << decoded.status();
    EXPECT_NE(decoded.status().message().find(crafted.message),
              std::string::npos)
        << crafted.what << ": " << decoded.status();
  }
}

TEST(SessionBlobTest, StateOfAnotherSizeIsRefused) {
  SessionSnapshot snapshot = Snapshot();
  snapshot.state = std::make_shared<const std::string>(100, 'x');
  const absl::StatusOr<SessionSnapshot> decoded =
      DecodeSessionBlob(EncodeSessionBlob(snapshot, Identity()), Identity());
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find("this model's states have 333"),
            std::string::npos)
      << decoded.status();
  // An empty state with a position is inconsistent.
  SessionSnapshot empty;
  empty.position = 3;
  empty.token_count = 3;
  EXPECT_EQ(DecodeSessionBlob(EncodeSessionBlob(empty, Identity()), Identity())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tvq::sessions
