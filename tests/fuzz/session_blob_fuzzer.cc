// libFuzzer target: the session blob importer (DecodeSessionBlob in
// server/sessions/session_blob.h), which reads what ImportSession receives.
// The input is a blob without its trailing CRC-32: the harness appends the
// right one, so mutations reach the fields behind the checksum (a corrupted
// checksum is session_blob_test's). Any bytes must be refused with a clean error or decode to a snapshot that
// is consistent with the identity (state size, positions, pending token);
// a decoded blob must encode back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <zlib.h>

#include "server/sessions/session_blob.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "session blob fuzzer: %s\n", what);
  std::abort();
}

// The identity tests/fuzz/make_seeds.py writes its seed blobs for.
tvq::sessions::BlobIdentity Identity() {
  tvq::sessions::BlobIdentity identity;
  identity.model_fingerprint = 0x1122334455667788ull;
  identity.tokenizer_fingerprint = 0x99aabbccddeeff00ull;
  identity.num_sublayers = 2;
  identity.n_head = 1;
  identity.n_code = 4;
  identity.mem_len = 4;
  identity.d_v = 2;
  identity.n_vocab = 259;
  identity.state_bytes = 64;
  return identity;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string blob(reinterpret_cast<const char*>(data), size);
  const uint32_t crc = static_cast<uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), data, static_cast<uInt>(size)));
  for (int i = 0; i < 4; ++i) blob.push_back(static_cast<char>(crc >> (8 * i)));
  const tvq::sessions::BlobIdentity identity = Identity();
  auto snapshot = tvq::sessions::DecodeSessionBlob(blob, identity);
  if (!snapshot.ok()) return 0;
  if (snapshot->state_bytes() != 0 &&
      static_cast<uint64_t>(snapshot->state_bytes()) != identity.state_bytes) {
    Fail("state of the wrong size accepted");
  }
  if (snapshot->position < 0 || snapshot->token_count < snapshot->position ||
      snapshot->token_count > snapshot->position + 1) {
    Fail("inconsistent position and token count accepted");
  }
  if ((snapshot->pending_token >= 0) !=
      (snapshot->token_count == snapshot->position + 1)) {
    Fail("pending token disagrees with the token count");
  }
  if (snapshot->pending_token < -1 ||
      snapshot->pending_token >= static_cast<int32_t>(identity.n_vocab)) {
    Fail("pending token outside the vocabulary accepted");
  }
  if (tvq::sessions::EncodeSessionBlob(*snapshot, identity) != blob) {
    Fail("decoded blob does not encode back to the same bytes");
  }
  return 0;
}
