// The drain peer (--drain-peer=HOST:PORT): pushes a draining server's
// sessions to another tvq-server through its ImportSession RPC, in chunks of
// 1 MiB, each push bounded by a deadline (--drain-peer-timeout). The peer
// checks the blob like any import.
#ifndef TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_
#define TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/sessions/session_migration.h"

namespace tvq::service {

// INVALID_ARGUMENT when `address` is not HOST:PORT or `timeout` is not
// positive. The channel connects lazily (at the first push).
absl::StatusOr<std::unique_ptr<sessions::SessionPeer>> MakePeerSessionImporter(
    const std::string& address, absl::Duration timeout);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_PEER_SESSION_IMPORTER_H_
