#include "server/auth/api_key_store.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tvq::auth {
namespace {

constexpr std::string_view kHashPrefix = "sha256:";
constexpr size_t kMinKeyLength = 16;
constexpr size_t kMaxKeyLength = 512;
// A key file is small; anything larger is a mistake (a wrong path).
constexpr std::streamsize kMaxFileBytes = 1 << 20;

bool IsKeyCharacter(char c) { return c > ' ' && c < 0x7f; }

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' ||
         c == '\v';
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(a[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::string> ReadKeyFile(const std::string& path,
                                        std::string_view flag =
                                            "api-keys-file") {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrFormat("--%s=%s cannot be read", flag, path));
  }
  std::string text(static_cast<size_t>(kMaxFileBytes) + 1, '\0');
  file.read(text.data(), kMaxFileBytes + 1);
  if (file.bad()) {
    return absl::DataLossError(
        absl::StrFormat("--%s=%s: read error", flag, path));
  }
  text.resize(static_cast<size_t>(file.gcount()));
  if (text.size() > static_cast<size_t>(kMaxFileBytes)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s=%s is larger than %d bytes", flag, path, kMaxFileBytes));
  }
  return text;
}

}  // namespace

absl::StatusOr<std::string> ReadClientKeyFile(std::string_view flag,
                                              const std::string& path) {
  absl::StatusOr<std::string> text = ReadKeyFile(path, flag);
  if (!text.ok()) return text.status();
  const std::string_view first =
      Trim(std::string_view(*text).substr(0, text->find('\n')));
  if (first.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s=%s has no key on its first line", flag, path));
  }
  if (first.find_first_of(" \t") != first.npos) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s=%s: the key on its first line holds a space", flag, path));
  }
  return std::string(first);
}

KeyDigest Sha256(std::string_view text) {
  KeyDigest digest{};
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(),
             nullptr);
  return digest;
}

std::string KeyFingerprint(std::string_view key) {
  const KeyDigest digest = Sha256(key);
  return absl::BytesToHexString(absl::string_view(
                                    reinterpret_cast<const char*>(digest.data()),
                                    digest.size()))
      .substr(0, 8);
}

std::string KeyOwnerId(const KeyDigest& digest) {
  return "key-" +
         absl::BytesToHexString(absl::string_view(
                                    reinterpret_cast<const char*>(digest.data()),
                                    digest.size()))
             .substr(0, 16);
}

absl::StatusOr<std::vector<KeyDigest>> ParseApiKeys(std::string_view text,
                                                    std::string_view source) {
  std::vector<KeyDigest> digests;
  int number = 0;
  while (!text.empty()) {
    ++number;
    const size_t end = std::min(text.find('\n'), text.size());
    const std::string_view line = Trim(text.substr(0, end));
    text.remove_prefix(std::min(end + 1, text.size()));
    if (line.empty() || line.front() == '#') continue;
    auto problem = [&](std::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s line %d: %s", source, number, what));
    };
    if (line.substr(0, kHashPrefix.size()) == kHashPrefix) {
      const std::string_view hex = line.substr(kHashPrefix.size());
      if (hex.size() != 64 ||
          hex.find_first_not_of("0123456789abcdefABCDEF") != hex.npos) {
        return problem(
            "a hashed key must be \"sha256:\" followed by 64 hex digits");
      }
      const std::string bytes =
          absl::HexStringToBytes(absl::string_view(hex.data(), hex.size()));
      KeyDigest digest{};
      std::copy(bytes.begin(), bytes.end(), digest.begin());
      digests.push_back(digest);
      continue;
    }
    for (char c : line) {
      if (!IsKeyCharacter(c)) {
        return problem(
            "a key must be printable ASCII without spaces (one key per "
            "line)");
      }
    }
    if (line.size() < kMinKeyLength || line.size() > kMaxKeyLength) {
      return problem(absl::StrFormat(
          "a key must have %d to %d characters, this one has %d",
          kMinKeyLength, kMaxKeyLength, line.size()));
    }
    digests.push_back(Sha256(line));
  }
  if (digests.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s holds no key (one key or sha256:HEX per line; '#' starts a "
        "comment)",
        source));
  }
  return digests;
}

const char* KeyCheckName(KeyCheck check) {
  switch (check) {
    case KeyCheck::kAccepted:
      return "accepted";
    case KeyCheck::kMissing:
      return "missing";
    case KeyCheck::kInvalid:
      return "invalid";
  }
  return "invalid";
}

absl::StatusOr<std::unique_ptr<ApiKeyStore>> ApiKeyStore::Load(
    std::string path) {
  absl::StatusOr<std::string> text = ReadKeyFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<KeyDigest>> digests =
      ParseApiKeys(*text, absl::StrCat("--api-keys-file=", path));
  if (!digests.ok()) return digests.status();
  return std::unique_ptr<ApiKeyStore>(
      new ApiKeyStore(std::move(path), *std::move(digests)));
}

ApiKeyStore::ApiKeyStore(std::vector<KeyDigest> digests)
    : ApiKeyStore("", std::move(digests)) {}

ApiKeyStore::ApiKeyStore(std::string path, std::vector<KeyDigest> digests)
    : path_(std::move(path)),
      digests_(std::make_shared<const std::vector<KeyDigest>>(
          std::move(digests))) {}

absl::StatusOr<int> ApiKeyStore::Reload() {
  if (path_.empty()) {
    return absl::FailedPreconditionError("the key store has no file");
  }
  absl::StatusOr<std::string> text = ReadKeyFile(path_);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<KeyDigest>> digests =
      ParseApiKeys(*text, absl::StrCat("--api-keys-file=", path_));
  if (!digests.ok()) return digests.status();
  const int count = static_cast<int>(digests->size());
  auto replacement =
      std::make_shared<const std::vector<KeyDigest>>(*std::move(digests));
  absl::MutexLock lock(&mutex_);
  digests_ = std::move(replacement);
  return count;
}

namespace {

// The key of an Authorization value "Bearer KEY" (the scheme in any case):
// kAccepted with *key set, or why there is none.
KeyCheck BearerKey(std::string_view authorization, std::string_view* key) {
  const std::string_view value = Trim(authorization);
  if (value.empty()) return KeyCheck::kMissing;
  constexpr std::string_view kScheme = "bearer";
  if (EqualsIgnoreCase(value, kScheme)) return KeyCheck::kMissing;
  if (value.size() <= kScheme.size() ||
      !EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme) ||
      value[kScheme.size()] != ' ') {
    return KeyCheck::kInvalid;
  }
  *key = Trim(value.substr(kScheme.size()));
  return key->empty() ? KeyCheck::kMissing : KeyCheck::kAccepted;
}

}  // namespace

std::string KeyOwnerOfAuthorization(std::string_view authorization) {
  std::string_view key;
  if (BearerKey(authorization, &key) != KeyCheck::kAccepted) return "";
  return KeyOwnerId(Sha256(key));
}

KeyCheck ApiKeyStore::CheckAuthorization(std::string_view authorization,
                                         std::string* owner) const {
  std::string_view key;
  if (const KeyCheck parsed = BearerKey(authorization, &key);
      parsed != KeyCheck::kAccepted) {
    return parsed;
  }
  return CheckKey(key, owner);
}

KeyCheck ApiKeyStore::CheckKey(std::string_view key,
                               std::string* owner) const {
  if (key.empty()) return KeyCheck::kMissing;
  std::shared_ptr<const std::vector<KeyDigest>> digests;
  {
    absl::MutexLock lock(&mutex_);
    digests = digests_;
  }
  const KeyDigest presented = Sha256(key);
  // Every digest is compared in full (CRYPTO_memcmp), match or not: the
  // time taken says nothing about which bytes matched.
  bool match = false;
  for (const KeyDigest& digest : *digests) {
    match |= CRYPTO_memcmp(digest.data(), presented.data(), digest.size()) == 0;
  }
  if (!match) return KeyCheck::kInvalid;
  if (owner != nullptr) *owner = KeyOwnerId(presented);
  return KeyCheck::kAccepted;
}

int ApiKeyStore::size() const {
  absl::MutexLock lock(&mutex_);
  return static_cast<int>(digests_->size());
}

}  // namespace tvq::auth
