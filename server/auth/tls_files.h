// The TLS files of tvq-server's listeners (--tls-cert, --tls-key,
// --tls-client-ca) and of its drain peer client (--drain-peer-tls-*;
// docs/security.md), read at start (again on SIGHUP for the listeners', at
// the drain for the peer's) and checked with OpenSSL before they are used,
// so that a wrong file is an error at start naming the flag, not a failed
// handshake later:
//   - a key without a certificate (or the reverse), or a client CA without
//     both, is refused;
//   - each file must be readable, at most 1 MiB, and hold PEM: the
//     certificate file one or more certificates (leaf first), the key file
//     one unencrypted private key, the client-CA file one or more
//     certificates;
//   - the key must belong to the leaf certificate.
#ifndef TVQ_SERVER_AUTH_TLS_FILES_H_
#define TVQ_SERVER_AUTH_TLS_FILES_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace tvq::auth {

struct TlsPaths {
  std::string cert;
  std::string key;
  std::string client_ca;  // empty = no client certificates asked for
};

// The PEM text of checked files.
struct TlsMaterial {
  std::string cert_chain;
  std::string private_key;
  // Non-empty: mutual TLS, every client must present a certificate that
  // this CA (bundle) signed.
  std::string client_ca;

  bool mutual() const { return !client_ca.empty(); }
};

// nullopt when no TLS flag is set; the checked material when cert and key
// are; an error naming the flag otherwise.
absl::StatusOr<std::optional<TlsMaterial>> LoadTlsMaterial(
    const TlsPaths& paths);

// The TLS files of a connection this server makes as a client (the drain
// peer's, --drain-peer-tls-*): the CA that signed the server's certificate,
// and optionally a client certificate for a server that asks for one
// (mutual TLS). Flags are named `flag_prefix` + "tls-ca" / "tls-cert" /
// "tls-key" in errors.
struct ClientTlsPaths {
  std::string flag_prefix;
  std::string ca;
  std::string cert;
  std::string key;
};

struct ClientTlsMaterial {
  std::string server_ca;
  // Both empty: no client certificate.
  std::string cert_chain;
  std::string private_key;
};

// nullopt when no file is given; the checked material when the CA is (with
// cert and key both or neither); an error naming the flag otherwise.
absl::StatusOr<std::optional<ClientTlsMaterial>> LoadClientTlsMaterial(
    const ClientTlsPaths& paths);

}  // namespace tvq::auth

#endif  // TVQ_SERVER_AUTH_TLS_FILES_H_
