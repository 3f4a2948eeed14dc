// The API keys tvq-server accepts (--api-keys-file, docs/security.md).
//
// The file holds one key per line: a plain key (16 to 512 printable ASCII
// characters, no spaces), or "sha256:" followed by the 64 hex digits of a
// key's SHA-256, so that the file need not hold the secret itself. Blank
// lines and lines starting with '#' are ignored. Only digests are kept in
// memory; a presented key is hashed and compared with every digest in
// constant time. Nothing here ever logs or returns a key: errors name the
// file and the line, and KeyFingerprint gives a short hash prefix for logs.
//
// Reload() re-reads the file (on SIGHUP); a file that no longer parses
// leaves the keys in force unchanged. Check* and Reload are thread-safe.
#ifndef TVQ_SERVER_AUTH_API_KEY_STORE_H_
#define TVQ_SERVER_AUTH_API_KEY_STORE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace tvq::auth {

using KeyDigest = std::array<uint8_t, 32>;

// SHA-256 of `text`.
KeyDigest Sha256(std::string_view text);

// The first 8 hex digits of the key's SHA-256: enough to tell keys apart
// in a log, useless to an attacker.
std::string KeyFingerprint(std::string_view key);

// Who holds a key, for the per-key limits (--max-sessions-per-key): "key-"
// and the first 16 hex digits of its SHA-256. Never the key; the same for a
// key listed plain or hashed, and across reloads.
std::string KeyOwnerId(const KeyDigest& digest);
// The KeyOwnerId of the key in an Authorization value ("Bearer KEY"), ""
// when it holds none. It does not check the key: call it only on a request
// the key check accepted.
std::string KeyOwnerOfAuthorization(std::string_view authorization);

// The key a client of another server presents (--drain-peer-api-key-file):
// the first line of `path`, trimmed; errors name `--flag` and the file,
// never the key.
absl::StatusOr<std::string> ReadClientKeyFile(std::string_view flag,
                                              const std::string& path);

// Parses a key file's text into digests; errors name `source`, the line
// and the problem (never the key).
absl::StatusOr<std::vector<KeyDigest>> ParseApiKeys(std::string_view text,
                                                    std::string_view source);

enum class KeyCheck {
  kAccepted,
  // No credential: no Authorization header / metadata, or an empty one.
  kMissing,
  // A credential that is not "Bearer <a key of the store>".
  kInvalid,
};

// "missing" / "invalid" (the metrics' reason label); "accepted".
const char* KeyCheckName(KeyCheck check);

class ApiKeyStore {
 public:
  // Reads and parses `path`.
  static absl::StatusOr<std::unique_ptr<ApiKeyStore>> Load(std::string path);
  // A store of `digests` that has no file (tests).
  explicit ApiKeyStore(std::vector<KeyDigest> digests);

  ApiKeyStore(const ApiKeyStore&) = delete;
  ApiKeyStore& operator=(const ApiKeyStore&) = delete;

  // Re-reads the file. On success the new keys replace the old ones and
  // the number of keys is returned; on error the old keys stay in force.
  absl::StatusOr<int> Reload();

  // An Authorization value: "Bearer KEY" (the scheme in any case). When the
  // key is accepted and `owner` is not null, *owner = its KeyOwnerId.
  KeyCheck CheckAuthorization(std::string_view authorization,
                              std::string* owner = nullptr) const;
  // A bare key.
  KeyCheck CheckKey(std::string_view key, std::string* owner = nullptr) const;

  int size() const;
  const std::string& path() const { return path_; }

 private:
  ApiKeyStore(std::string path, std::vector<KeyDigest> digests);

  const std::string path_;
  mutable absl::Mutex mutex_;
  std::shared_ptr<const std::vector<KeyDigest>> digests_
      ABSL_GUARDED_BY(mutex_);
};

}  // namespace tvq::auth

#endif  // TVQ_SERVER_AUTH_API_KEY_STORE_H_
