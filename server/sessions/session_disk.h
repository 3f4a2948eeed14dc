// The disk tier of sessions (--session-dir): one file per session, written
// atomically (a temporary file, fsync, rename, fsync of the directory) and
// checksummed; read back with every field checked.
//
// File "<hex of the session id>.tvqsession", format version 2 (integers
// little-endian):
//   offset size field
//        0    8 magic "TVQSDISK"
//        8    4 u32 format version (2)
//       12    4 u32 id length L (1..128)
//       16    8 i64 ttl in milliseconds
//       24    8 i64 last use, Unix milliseconds
//       32    4 u32 flags (bit 0: pinned)
//       36    4 u32 owner length O (0..64)
//       40    L the session id
//   40 + L    O the owner (the API key's auth::KeyOwnerId; none when O = 0)
//   40+L+O    . the session blob (session_blob.h), to 4 bytes before the end
//      end-4  4 u32 CRC-32 (zlib) of every byte before it
// Version 1 (written before owners existed) has no owner length and no
// owner: the id starts at 36. Both are read; version 2 is written.
// At start-up Scan lists the directory: every valid file becomes a session
// on disk; a corrupt, truncated or foreign file (another model) is reported
// and skipped, never loaded and never deleted; leftover temporary files of
// an interrupted write are removed, and the file of an interrupted take (a
// server killed between claiming a session and holding it in memory) is
// restored under its name; not those still locked by a write or a take in
// progress (another server sharing the directory).
//
// Several servers may share one directory (a shared volume; migration on
// drain): a file is a session no server holds in memory. Take claims it
// atomically (lock, rename to a private name, read, unlink), so exactly one
// server gets it; the others get NOT_FOUND.
#ifndef TVQ_SERVER_SESSIONS_SESSION_DISK_H_
#define TVQ_SERVER_SESSIONS_SESSION_DISK_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/state_pool.h"
#include "server/sessions/session_blob.h"
#include "server/sessions/session_store.h"

namespace tvq::sessions {

class SessionDisk final : public SessionSpill {
 public:
  // Creates `directory` if needed. Errors name it.
  static absl::StatusOr<std::unique_ptr<SessionDisk>> Open(
      const std::string& directory, const BlobIdentity& identity,
      const runtime::StatePool& pool);

  // Every session in the directory (snapshots with their state, which the
  // store drops), and one line per file skipped, naming it and why.
  struct ScanResult {
    std::vector<SpilledSession> sessions;
    std::vector<std::string> problems;
  };
  ScanResult Scan() const;

  absl::StatusOr<int64_t> Save(const SpilledSession& session) override;
  absl::StatusOr<SpilledSession> Take(const std::string& session_id) override;
  absl::StatusOr<SpilledSession> Read(
      const std::string& session_id) const override;
  bool Exists(const std::string& session_id) const override;
  void Remove(const std::string& session_id,
              std::optional<absl::Time> only_if_last_used) override;

  const std::string& directory() const { return directory_; }

 private:
  SessionDisk(std::string directory, const BlobIdentity& identity,
              const runtime::StatePool& pool);
  std::string PathOf(const std::string& session_id) const;
  // The session in `bytes` (the content of `path`), every field checked.
  absl::StatusOr<SpilledSession> Parse(const std::string& path,
                                       const std::string& bytes) const;

  const std::string directory_;
  const BlobIdentity identity_;
  const runtime::StatePool& pool_;
};

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_SESSION_DISK_H_
