#include "server/auth/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace tvq::auth {
namespace {

constexpr std::streamsize kMaxFileBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

// OpenSSL's first queued error as text ("" when none); clears the queue.
std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

absl::StatusOr<std::string> ReadPemFile(const char* flag,
                                        const std::string& path) {
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

Bio MemoryBio(const std::string& text) {
  return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The certificates of a PEM text, leaf first; an error unless there is at
// least one.
absl::StatusOr<Cert> FirstCertificate(const char* flag,
                                      const std::string& path,
                                      const std::string& text) {
  ERR_clear_error();
  Bio bio = MemoryBio(text);
  Cert first(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (first == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s=%s holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"): "
        "%s",
        flag, path, OpenSslError()));
  }
  // The rest must parse too (a chain with a broken intermediate fails
  // every handshake).
  while (true) {
    Cert next(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (next == nullptr) break;
  }
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM &&
                     ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s=%s: a certificate after the first is not "
                        "valid PEM: %s",
                        flag, path, OpenSslError()));
  }
  ERR_clear_error();
  return first;
}

// No passphrase prompt: an encrypted key is refused.
int NoPassphrase(char*, int, int, void*) { return -1; }

}  // namespace

absl::StatusOr<std::optional<TlsMaterial>> LoadTlsMaterial(
    const TlsPaths& paths) {
  if (paths.cert.empty() && paths.key.empty() && paths.client_ca.empty()) {
    return std::nullopt;
  }
  if (paths.cert.empty() || paths.key.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "TLS needs both --tls-cert and --tls-key (got %s)",
        paths.cert.empty() && paths.key.empty()
            ? "--tls-client-ca alone"
            : (paths.cert.empty() ? "--tls-key without --tls-cert"
                                  : "--tls-cert without --tls-key")));
  }
  TlsMaterial material;
  absl::StatusOr<std::string> cert_text = ReadPemFile("tls-cert", paths.cert);
  if (!cert_text.ok()) return cert_text.status();
  absl::StatusOr<std::string> key_text = ReadPemFile("tls-key", paths.key);
  if (!key_text.ok()) return key_text.status();
  absl::StatusOr<Cert> leaf =
      FirstCertificate("tls-cert", paths.cert, *cert_text);
  if (!leaf.ok()) return leaf.status();
  ERR_clear_error();
  Bio key_bio = MemoryBio(*key_text);
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase,
                                  nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--tls-key=%s holds no unencrypted PEM private key (\"-----BEGIN "
        "PRIVATE KEY-----\"; an encrypted key must be decrypted first): %s",
        paths.key, OpenSslError()));
  }
  if (X509_check_private_key(leaf->get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrFormat(
        "--tls-key=%s does not belong to the certificate of --tls-cert=%s",
        paths.key, paths.cert));
  }
  material.cert_chain = *std::move(cert_text);
  material.private_key = *std::move(key_text);
  if (!paths.client_ca.empty()) {
    absl::StatusOr<std::string> ca_text =
        ReadPemFile("tls-client-ca", paths.client_ca);
    if (!ca_text.ok()) return ca_text.status();
    absl::StatusOr<Cert> ca =
        FirstCertificate("tls-client-ca", paths.client_ca, *ca_text);
    if (!ca.ok()) return ca.status();
    material.client_ca = *std::move(ca_text);
  }
  return material;
}

}  // namespace tvq::auth
