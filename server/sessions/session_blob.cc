#include "server/sessions/session_blob.h"

#include <zlib.h>

#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace tvq::sessions {
namespace {

void PutU32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>(value >> (8 * i)));
}
void PutU64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(value >> (8 * i)));
}
uint32_t GetU32(std::string_view in, size_t offset) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(in[offset + i]);
  }
  return value;
}
uint64_t GetU64(std::string_view in, size_t offset) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) {
    value = (value << 8) | static_cast<unsigned char>(in[offset + i]);
  }
  return value;
}

uint32_t Crc32(std::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* data = reinterpret_cast<const Bytef*>(bytes.data());
  size_t left = bytes.size();
  while (left > 0) {
    const uInt piece = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
    crc = crc32(crc, data, piece);
    data += piece;
    left -= piece;
  }
  return static_cast<uint32_t>(crc);
}

absl::Status DimMismatch(std::string_view name, uint32_t blob, uint32_t here) {
  return absl::FailedPreconditionError(absl::StrFormat(
      "session blob: made for a model with %s = %d, this model has %d", name,
      blob, here));
}

}  // namespace

std::string EncodeSessionBlob(const SessionSnapshot& snapshot,
                              const BlobIdentity& identity) {
  const uint64_t state_length =
      snapshot.state == nullptr ? 0 : snapshot.state->size();
  std::string out;
  out.reserve(kBlobHeaderBytes + state_length + kBlobChecksumBytes);
  out.append(kBlobMagic, sizeof(kBlobMagic));
  PutU32(out, kBlobVersion);
  PutU32(out, kBlobHeaderBytes);
  PutU64(out, identity.model_fingerprint);
  PutU64(out, identity.tokenizer_fingerprint);
  PutU32(out, identity.num_sublayers);
  PutU32(out, identity.n_head);
  PutU32(out, identity.n_code);
  PutU32(out, identity.mem_len);
  PutU32(out, identity.d_v);
  PutU32(out, identity.n_vocab);
  PutU32(out, kBlobStateDtypesF32);
  PutU32(out, static_cast<uint32_t>(snapshot.pending_token));
  PutU64(out, static_cast<uint64_t>(snapshot.position));
  PutU64(out, static_cast<uint64_t>(snapshot.token_count));
  PutU64(out, snapshot.token_hash);
  PutU64(out, state_length);
  if (snapshot.state != nullptr) out += *snapshot.state;
  PutU32(out, Crc32(out));
  return out;
}

absl::StatusOr<SessionSnapshot> DecodeSessionBlob(
    std::string_view blob, const BlobIdentity& identity) {
  constexpr size_t kPrefix = 16;  // magic, version, header length
  if (blob.size() < kPrefix + kBlobChecksumBytes) {
    return absl::DataLossError(absl::StrFormat(
        "session blob: truncated: %d bytes, shorter than any session blob "
        "(at least %d)",
        blob.size(), kBlobHeaderBytes + kBlobChecksumBytes));
  }
  if (std::memcmp(blob.data(), kBlobMagic, sizeof(kBlobMagic)) != 0) {
    return absl::InvalidArgumentError(
        "session blob: not a tvq session blob (the magic \"TVQSESS\\0\" is "
        "missing)");
  }
  const uint32_t version = GetU32(blob, 8);
  if (version != kBlobVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session blob: format version %d is not supported (this server reads "
        "version %d)",
        version, kBlobVersion));
  }
  if (blob.size() < kBlobHeaderBytes + kBlobChecksumBytes) {
    return absl::DataLossError(absl::StrFormat(
        "session blob: truncated: %d bytes, the header and checksum alone "
        "take %d",
        blob.size(), kBlobHeaderBytes + kBlobChecksumBytes));
  }
  const size_t body = blob.size() - kBlobChecksumBytes;
  const uint32_t stored_crc = GetU32(blob, body);
  const uint32_t actual_crc = Crc32(blob.substr(0, body));
  if (stored_crc != actual_crc) {
    return absl::DataLossError(absl::StrFormat(
        "session blob: checksum mismatch (stored CRC-32 %08x, computed "
        "%08x over %d bytes): the blob is corrupted or truncated",
        stored_crc, actual_crc, body));
  }
  const uint32_t header_length = GetU32(blob, 12);
  if (header_length != kBlobHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session blob: header length %d, version %d has %d",
                        header_length, kBlobVersion, kBlobHeaderBytes));
  }
  const uint64_t model = GetU64(blob, 16);
  if (model != identity.model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "session blob: made by another model (model fingerprint %016x, this "
        "server's model is %016x)",
        model, identity.model_fingerprint));
  }
  const uint64_t tokenizer = GetU64(blob, 24);
  if (tokenizer != identity.tokenizer_fingerprint) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "session blob: made with another tokenizer (tokenizer fingerprint "
        "%016x, this server's tokenizer is %016x)",
        tokenizer, identity.tokenizer_fingerprint));
  }
  const struct {
    const char* name;
    size_t offset;
    uint32_t here;
  } dims[] = {{"attention sublayers", 32, identity.num_sublayers},
              {"n_head", 36, identity.n_head},
              {"n_code", 40, identity.n_code},
              {"mem_len", 44, identity.mem_len},
              {"d_v", 48, identity.d_v},
              {"n_vocab", 52, identity.n_vocab}};
  for (const auto& dim : dims) {
    const uint32_t value = GetU32(blob, dim.offset);
    if (value != dim.here) return DimMismatch(dim.name, value, dim.here);
  }
  const uint32_t dtypes = GetU32(blob, 56);
  if (dtypes != kBlobStateDtypesF32) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session blob: state dtypes code %d unknown (this server stores %d = "
        "float32 with int32 window codes)",
        dtypes, kBlobStateDtypesF32));
  }
  SessionSnapshot snapshot;
  snapshot.pending_token = static_cast<int32_t>(GetU32(blob, 60));
  snapshot.position = static_cast<int64_t>(GetU64(blob, 64));
  snapshot.token_count = static_cast<int64_t>(GetU64(blob, 72));
  snapshot.token_hash = GetU64(blob, 80);
  const uint64_t state_length = GetU64(blob, 88);
  const uint64_t actual_state = body - kBlobHeaderBytes;
  if (state_length != actual_state) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session blob: the header says the state has %d bytes, the blob "
        "holds %d",
        state_length, actual_state));
  }
  if (state_length != 0 && state_length != identity.state_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session blob: a state of %d bytes, this model's states have %d",
        state_length, identity.state_bytes));
  }
  if (snapshot.pending_token < -1 ||
      snapshot.pending_token >= static_cast<int64_t>(identity.n_vocab)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session blob: pending token %d outside [-1, %d)",
                        snapshot.pending_token, identity.n_vocab));
  }
  if (snapshot.position < 0 || (state_length == 0 && snapshot.position != 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session blob: position %d with a state of %d bytes",
                        snapshot.position, state_length));
  }
  // Compared as token_count - pending = position: with position up to
  // INT64_MAX, position + 1 would overflow.
  const int64_t pending_count = snapshot.pending_token >= 0 ? 1 : 0;
  if (snapshot.token_count < 0 ||
      snapshot.token_count - pending_count != snapshot.position) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session blob: token count %d does not match position %d and "
        "pending token %d",
        snapshot.token_count, snapshot.position, snapshot.pending_token));
  }
  if (state_length > 0) {
    snapshot.state = std::make_shared<const std::string>(
        blob.substr(kBlobHeaderBytes, state_length));
  }
  return snapshot;
}

}  // namespace tvq::sessions
