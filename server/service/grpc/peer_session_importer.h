// The drain peer (--drain-peer=HOST:PORT): pushes a draining server's
// sessions to another tvq-server through its ImportSession RPC, in chunks of
// 1 MiB, each push bounded by a deadline (--drain-peer-timeout). The peer
// checks the blob like any import. Over TLS and with an API key when the
// peer asks for them (PeerCredentials; --drain-peer-tls-*,
// --drain-peer-api-key-file), read when the drain's first push starts, so
// that files rotated while the server ran are the ones used.
#ifndef TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_
#define TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_

#include <functional>
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

// Reads the credentials from their files; errors name the flag and file.
using PeerCredentialsLoader = std::function<absl::StatusOr<PeerCredentials>()>;

// INVALID_ARGUMENT when `address` is not HOST:PORT or `timeout` is not
// positive. Nothing is read or connected until the first push: then `load`
// (null: plaintext, no key) gives the credentials and the channel is made;
// when it fails the push fails UNAVAILABLE naming why (and the draining
// server saves the rest to --session-dir).
absl::StatusOr<std::unique_ptr<sessions::SessionPeer>> MakePeerSessionImporter(
    const std::string& address, absl::Duration timeout,
    PeerCredentialsLoader load = nullptr);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_
