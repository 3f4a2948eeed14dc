// The drain peer (--drain-peer=HOST:PORT): pushes a draining server's
// sessions to another tvq-server through its ImportSession RPC, in chunks of
// 1 MiB, each push bounded by a deadline (--drain-peer-timeout). The peer
// checks the blob like any import. Over TLS and with an API key when the
// peer asks for them (PeerCredentials; --drain-peer-tls-*,
// --drain-peer-api-key-file).
#ifndef TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_
#define TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/tls_files.h"
#include "server/sessions/session_migration.h"

namespace tvq::service {

// How the push reaches a peer that asks for credentials: TLS (the peer's
// --tls-cert verified against `tls->server_ca`; a client certificate when
// the peer has --tls-client-ca), and an API key sent as "authorization:
// Bearer KEY" (a peer with --api-keys-file). Empty: plaintext, no key.
struct PeerCredentials {
  std::optional<auth::ClientTlsMaterial> tls;
  std::string api_key;
};

// INVALID_ARGUMENT when `address` is not HOST:PORT or `timeout` is not
// positive. The channel connects lazily (at the first push).
absl::StatusOr<std::unique_ptr<sessions::SessionPeer>> MakePeerSessionImporter(
    const std::string& address, absl::Duration timeout,
    PeerCredentials credentials = {});

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_
