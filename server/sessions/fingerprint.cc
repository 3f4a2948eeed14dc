#include "server/sessions/fingerprint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/base/status_macros.h"

namespace tvq::sessions {
namespace {

constexpr uint64_t kP1 = 11400714785074694791ULL;
constexpr uint64_t kP2 = 14029467366897019727ULL;
constexpr uint64_t kP3 = 1609587929392839161ULL;
constexpr uint64_t kP4 = 9650029242287828579ULL;
constexpr uint64_t kP5 = 2870177450012600261ULL;

uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t Read64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t Read32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint64_t Round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = Rotl(acc, 31);
  return acc * kP1;
}

uint64_t MergeRound(uint64_t acc, uint64_t value) {
  acc ^= Round(0, value);
  return acc * kP1 + kP4;
}

void AppendU64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>(value >> (8 * i)));
}

}  // namespace

uint64_t Xxh64(std::string_view bytes, uint64_t seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const unsigned char* const end = p + bytes.size();
  uint64_t h;
  if (bytes.size() >= 32) {
    uint64_t v1 = seed + kP1 + kP2, v2 = seed + kP2, v3 = seed, v4 = seed - kP1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = Round(v1, Read64(p));
      v2 = Round(v2, Read64(p + 8));
      v3 = Round(v3, Read64(p + 16));
      v4 = Round(v4, Read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = Rotl(v1, 1) + Rotl(v2, 7) + Rotl(v3, 12) + Rotl(v4, 18);
    h = MergeRound(h, v1);
    h = MergeRound(h, v2);
    h = MergeRound(h, v3);
    h = MergeRound(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(bytes.size());
  while (p + 8 <= end) {
    h ^= Round(0, Read64(p));
    h = Rotl(h, 27) * kP1 + kP4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= static_cast<uint64_t>(Read32(p)) * kP1;
    h = Rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    h ^= (*p) * kP5;
    h = Rotl(h, 11) * kP1;
    ++p;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

absl::StatusOr<uint64_t> FileFingerprint(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrFormat("fingerprint: cannot open %s", path));
  }
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<char> buffer(kChunk);
  std::string digests;
  uint64_t length = 0;
  while (file) {
    file.read(buffer.data(), static_cast<std::streamsize>(kChunk));
    const std::streamsize got = file.gcount();
    if (got <= 0) break;
    length += static_cast<uint64_t>(got);
    AppendU64(digests,
              Xxh64(std::string_view(buffer.data(), static_cast<size_t>(got))));
  }
  if (file.bad()) {
    return absl::DataLossError(
        absl::StrFormat("fingerprint: error reading %s", path));
  }
  std::string summary;
  AppendU64(summary, length);
  summary += digests;
  return Xxh64(summary);
}

absl::StatusOr<ModelFingerprints> FingerprintModelDir(
    const std::string& model_dir, int n_vocab) {
  const std::filesystem::path dir(model_dir);
  TVQ_ASSIGN_OR_RETURN(uint64_t config,
                       FileFingerprint((dir / "config.json").string()));
  TVQ_ASSIGN_OR_RETURN(uint64_t weights,
                       FileFingerprint((dir / "model.safetensors").string()));
  std::string both;
  AppendU64(both, config);
  AppendU64(both, weights);
  ModelFingerprints fingerprints;
  fingerprints.model = Xxh64(both);
  const std::filesystem::path tokenizer = dir / "tokenizer.model";
  std::error_code error;
  if (std::filesystem::exists(tokenizer, error)) {
    TVQ_ASSIGN_OR_RETURN(fingerprints.tokenizer,
                         FileFingerprint(tokenizer.string()));
  } else {
    fingerprints.tokenizer =
        Xxh64(absl::StrFormat("tvq-byte-tokenizer/n_vocab=%d", n_vocab));
  }
  return fingerprints;
}

uint64_t ExtendTokenHash(uint64_t hash, std::span<const int32_t> tokens) {
  for (int32_t token : tokens) {
    const uint32_t bits = static_cast<uint32_t>(token);
    for (int i = 0; i < 4; ++i) {
      hash ^= (bits >> (8 * i)) & 0xFF;
      hash *= 0x100000001b3ULL;
    }
  }
  return hash;
}

}  // namespace tvq::sessions
