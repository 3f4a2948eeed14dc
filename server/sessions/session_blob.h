// The session blob: one session as bytes (ExportSession / ImportSession),
// versioned and self-describing. Layout of format version 1, every integer
// little-endian (docs/sessions.md has the same table):
//
//   offset size field
//        0    8 magic "TVQSESS\0"
//        8    4 u32 format version (1)
//       12    4 u32 header length (96): where the state starts
//       16    8 u64 model fingerprint (fingerprint.h)
//       24    8 u64 tokenizer fingerprint
//       32    4 u32 attention sublayers (2 * n_layer)
//       36    4 u32 n_head
//       40    4 u32 n_code
//       44    4 u32 mem_len
//       48    4 u32 d_v
//       52    4 u32 n_vocab
//       56    4 u32 state dtypes (1 = float32 counts/means/values, int32 codes)
//       60    4 i32 pending token (-1 = none)
//       64    8 i64 position (tokens the state absorbed)
//       72    8 i64 token count (position + 1 if a token is pending)
//       80    8 u64 token hash (FNV-1a 64 of the session's tokens)
//       88    8 u64 state length N (0 for an empty state, else exactly the
//                   StatePool::Export size of this model)
//       96    N the state (StatePool::Export bytes)
//   96 + N    4 u32 CRC-32 (zlib, IEEE) of bytes [0, 96 + N)
//
// Decoding checks, in this order, and never trusts a size it has not
// checked against the blob's actual length:
//   shorter than the fixed prefix, wrong magic  -> DATA_LOSS / INVALID_ARGUMENT
//   format version other than 1                 -> INVALID_ARGUMENT naming it
//     (read before the checksum: another version may lay out the rest
//      differently)
//   shorter than the header, checksum mismatch  -> DATA_LOSS
//   header length, dtypes                       -> INVALID_ARGUMENT
//   model or tokenizer fingerprint              -> FAILED_PRECONDITION naming
//                                                  both fingerprints
//   dims                                        -> FAILED_PRECONDITION
//   state length, position, token count,
//   pending token inconsistent                  -> INVALID_ARGUMENT
// The arrays of the state are checked by StatePool::ValidateExport.
#ifndef TVQ_SERVER_SESSIONS_SESSION_BLOB_H_
#define TVQ_SERVER_SESSIONS_SESSION_BLOB_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/sessions/session.h"

namespace tvq::sessions {

inline constexpr char kBlobMagic[8] = {'T', 'V', 'Q', 'S', 'E', 'S', 'S', '\0'};
inline constexpr uint32_t kBlobVersion = 1;
inline constexpr size_t kBlobHeaderBytes = 96;
inline constexpr size_t kBlobChecksumBytes = 4;
inline constexpr uint32_t kBlobStateDtypesF32 = 1;

// What a blob must match to be imported here: the serving model.
struct BlobIdentity {
  uint64_t model_fingerprint = 0;
  uint64_t tokenizer_fingerprint = 0;
  uint32_t num_sublayers = 0;
  uint32_t n_head = 0;
  uint32_t n_code = 0;
  uint32_t mem_len = 0;
  uint32_t d_v = 0;
  uint32_t n_vocab = 0;
  // StatePool::ExportBytes.
  uint64_t state_bytes = 0;
};

// The blob of `snapshot`, made by the server `identity` describes.
std::string EncodeSessionBlob(const SessionSnapshot& snapshot,
                              const BlobIdentity& identity);

// The snapshot in `blob`, or the first check it fails (above).
absl::StatusOr<SessionSnapshot> DecodeSessionBlob(std::string_view blob,
                                                  const BlobIdentity& identity);

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_SESSION_BLOB_H_
