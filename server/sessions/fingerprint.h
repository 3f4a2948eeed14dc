// Fingerprints that tie a session blob to the model and tokenizer it was
// made with, and the running hash of a session's tokens.
//
// Hash: XXH64 (seed 0), implemented here (xxhash's published algorithm; the
// tests check its reference vectors). A file is hashed in 1 MiB chunks: its
// fingerprint is XXH64 over (file length as u64 LE, then XXH64 of every
// chunk as u64 LE), so that files of any size stream through a fixed buffer.
//   model fingerprint     = XXH64(fp(config.json) || fp(model.safetensors))
//   tokenizer fingerprint = fp(tokenizer.model) when the model directory has
//                           one, else XXH64("tvq-byte-tokenizer/n_vocab=N")
// (each fp as u64 LE). Computed once when the engine loads.
//
// Token hash: FNV-1a 64 over the token ids as int32 LE, extended turn by
// turn, so the hash of a session equals the hash of all its tokens at once.
#ifndef TVQ_SERVER_SESSIONS_FINGERPRINT_H_
#define TVQ_SERVER_SESSIONS_FINGERPRINT_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tvq::sessions {

uint64_t Xxh64(std::string_view bytes, uint64_t seed = 0);

// The chunked fingerprint of one file (above). Errors name the file.
absl::StatusOr<uint64_t> FileFingerprint(const std::string& path);

struct ModelFingerprints {
  uint64_t model = 0;
  uint64_t tokenizer = 0;
};

// Of the model directory `model_dir` (config.json, model.safetensors and
// tokenizer.model when present); `n_vocab` names the byte tokenizer.
absl::StatusOr<ModelFingerprints> FingerprintModelDir(
    const std::string& model_dir, int n_vocab);

inline constexpr uint64_t kEmptyTokenHash = 0xcbf29ce484222325ULL;

// FNV-1a 64 of `hash`'s tokens followed by `tokens`.
uint64_t ExtendTokenHash(uint64_t hash, std::span<const int32_t> tokens);

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_FINGERPRINT_H_
