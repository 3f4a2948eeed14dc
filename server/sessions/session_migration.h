// Migration on drain: what a draining server does with the sessions it holds
// (SessionManager::Migrate), and the peer it may push them to.
//
// Each idle session held in memory is pushed to the peer (--drain-peer: the
// peer's ImportSession, which checks the blob like any import) and removed
// here once the peer holds it; when there is no peer, or the push fails, it
// is saved to the disk tier (--session-dir, a shared volume in a pool).
// After the first push that finds the peer unreachable (UNAVAILABLE or
// DEADLINE_EXCEEDED), the rest go straight to disk. Sessions already on disk
// stay there. A session that reaches neither is lost with the process:
// counted and reported, never silently.
#ifndef TVQ_SERVER_SESSIONS_SESSION_MIGRATION_H_
#define TVQ_SERVER_SESSIONS_SESSION_MIGRATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace tvq::sessions {

// Another server that takes sessions (implemented over gRPC in
// server/service/grpc/peer_session_importer.h). Called from the draining
// thread, one session at a time.
class SessionPeer {
 public:
  virtual ~SessionPeer() = default;
  // Imports `blob` (session_blob.h) as `session_id`, keeping its TTL,
  // pinned flag and owner (the API key it belongs to, "" = none); OK once
  // the peer holds it. Bounded by the peer's timeout.
  virtual absl::Status Import(const std::string& session_id,
                              const std::string& blob, absl::Duration ttl,
                              bool pinned, const std::string& owner) = 0;
  // For messages: "HOST:PORT".
  virtual std::string Describe() const = 0;
};

struct MigrationReport {
  // Sessions the peer took, and the blob bytes sent.
  int to_peer = 0;
  int64_t peer_bytes = 0;
  // Sessions saved to the disk tier (first choice, or after a failed push),
  // and the file bytes written.
  int to_disk = 0;
  int64_t disk_bytes = 0;
  // Pushes the peer refused or that timed out (each then tried on disk).
  int peer_failures = 0;
  // Sessions that reached neither (lost when the process ends).
  int lost = 0;
  // One line per failure, naming the session and why.
  std::vector<std::string> problems;
  absl::Duration elapsed;

  int migrated() const { return to_peer + to_disk; }
};

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_SESSION_MIGRATION_H_
