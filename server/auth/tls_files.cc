#include "server/auth/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
#include <string>

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

namespace {

// A certificate chain and its private key, checked: both readable PEM, the
// key unencrypted and belonging to the leaf. Errors name the flags.
absl::Status LoadKeyPair(const char* cert_flag, const std::string& cert_path,
                         const char* key_flag, const std::string& key_path,
                         std::string* cert_chain, std::string* private_key) {
  absl::StatusOr<std::string> cert_text = ReadPemFile(cert_flag, cert_path);
  if (!cert_text.ok()) return cert_text.status();
  absl::StatusOr<std::string> key_text = ReadPemFile(key_flag, key_path);
  if (!key_text.ok()) return key_text.status();
  absl::StatusOr<Cert> leaf = FirstCertificate(cert_flag, cert_path, *cert_text);
  if (!leaf.ok()) return leaf.status();
  ERR_clear_error();
  Bio key_bio = MemoryBio(*key_text);
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase,
                                  nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s=%s holds no unencrypted PEM private key (\"-----BEGIN "
        "PRIVATE KEY-----\"; an encrypted key must be decrypted first): %s",
        key_flag, key_path, OpenSslError()));
  }
  if (X509_check_private_key(leaf->get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s=%s does not belong to the certificate of --%s=%s",
                        key_flag, key_path, cert_flag, cert_path));
  }
  *cert_chain = *std::move(cert_text);
  *private_key = *std::move(key_text);
  return absl::OkStatus();
}

// A CA bundle: readable PEM with at least one certificate.
absl::StatusOr<std::string> LoadCaBundle(const char* flag,
                                         const std::string& path) {
  absl::StatusOr<std::string> text = ReadPemFile(flag, path);
  if (!text.ok()) return text.status();
  absl::StatusOr<Cert> first = FirstCertificate(flag, path, *text);
  if (!first.ok()) return first.status();
  return text;
}

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
  if (absl::Status pair =
          LoadKeyPair("tls-cert", paths.cert, "tls-key", paths.key,
                      &material.cert_chain, &material.private_key);
      !pair.ok()) {
    return pair;
  }
  if (!paths.client_ca.empty()) {
    absl::StatusOr<std::string> ca =
        LoadCaBundle("tls-client-ca", paths.client_ca);
    if (!ca.ok()) return ca.status();
    material.client_ca = *std::move(ca);
  }
  return material;
}

absl::StatusOr<std::optional<ClientTlsMaterial>> LoadClientTlsMaterial(
    const ClientTlsPaths& paths) {
  const std::string prefix = paths.flag_prefix;
  const std::string ca_flag = prefix + "tls-ca";
  const std::string cert_flag = prefix + "tls-cert";
  const std::string key_flag = prefix + "tls-key";
  if (paths.ca.empty() && paths.cert.empty() && paths.key.empty()) {
    return std::nullopt;
  }
  if (paths.ca.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s and --%s are a client certificate for TLS: they need --%s "
        "(the CA that signed the server's certificate)",
        cert_flag, key_flag, ca_flag));
  }
  if (paths.cert.empty() != paths.key.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a client certificate needs both --%s and --%s", cert_flag, key_flag));
  }
  ClientTlsMaterial material;
  absl::StatusOr<std::string> ca = LoadCaBundle(ca_flag.c_str(), paths.ca);
  if (!ca.ok()) return ca.status();
  material.server_ca = *std::move(ca);
  if (!paths.cert.empty()) {
    if (absl::Status pair = LoadKeyPair(cert_flag.c_str(), paths.cert,
                                        key_flag.c_str(), paths.key,
                                        &material.cert_chain,
                                        &material.private_key);
        !pair.ok()) {
      return pair;
    }
  }
  return material;
}

}  // namespace tvq::auth
