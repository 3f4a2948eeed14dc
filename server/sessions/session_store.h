// The host-memory tier of sessions: every session's saved state and its
// bookkeeping (TTL, pinned, last use, the request running on it), under a
// byte budget. Pure bookkeeping, no model: SessionManager moves states in
// and out of the scheduler's slots.
//
// Rules:
// - Ids: 1 to 128 printable ASCII characters without spaces; a new session
//   without one gets "sess-" + 16 hex digits.
// - Budget: every session is charged one state (bytes_per_state) from its
//   creation, whether its state is empty or not, so that a request's result
//   always fits. Creating one more when the budget is full evicts idle
//   unpinned sessions, least recently used first; when none can go,
//   RESOURCE_EXHAUSTED. Pinned sessions, and sessions a request is running
//   on, are never evicted.
// - TTL: an idle unpinned session not used for its ttl is closed (expired).
//   Expiry is checked at every call (no thread of its own).
// - One request at a time: Begin leases the session to one request; a
//   second Begin fails at once with FAILED_PRECONDITION naming the session.
//   Commit ends the lease with the request's result, Abort without (the
//   session stays exactly as it was). A leased session can be read (Fork,
//   Export see its last committed state) but not closed.
// - A closed, expired or evicted session is gone: NOT_FOUND, and the message
//   says which of the three happened to the last few thousand such ids.
// - Prefix-reuse entries (NewSession::hidden): end-of-request states of
//   requests without a session, under keys clients cannot name; never
//   listed, never spilled, evicted before any session (least recently used
//   first), replaced when created again under the same key; an entry never
//   evicts a session to make room for itself (it is then not kept). FindPrefix
//   finds the longest one whose tokens begin a prompt.
// - Disk tier (SetSpill, --session-dir): an evicted session is saved to disk
//   instead of dropped (it keeps its id, TTL and pinned flag; it no longer
//   counts against the memory budget) and is loaded back, making room like a
//   new one, the next time it is used; its file is removed then. A file that
//   cannot be loaded ends the session (the error says why). SpillAll saves
//   every idle session (at shutdown). The spill runs under the store's lock:
//   other session calls wait for the disk. The tier may be shared by several
//   servers (one directory on a shared volume): an id this store does not
//   hold is looked up there, and a session found there is taken (the file
//   removed, so exactly one server holds it) and continues here; creating
//   an id the tier holds is ALREADY_EXISTS. Such an adopted session is a
//   guest: its home replica drained or died, and a router's hash sends it
//   back there when that replica returns. So a guest is written back to
//   the tier after each of its requests (one state write per turn), and
//   whichever server gets its next turn finds it there. Only a lease
//   (Begin: a request runs on it) adopts; reads (Get, Ttl, Snapshot) of a
//   session not held here read the file and leave it in the tier.
// - Migration (at drain, SessionManager::Migrate): every session held in
//   memory is leased while its state is pushed to a peer, then removed
//   (FinishMigration), or saved to disk when the push fails
//   (AbortMigration). One that a request holds when the migration reaches
//   it (a request refused at the drain, or a last commit) is waited for,
//   never skipped: skipped, it would be lost at exit. From the moment it
//   starts (BeginDrain) the store takes no session into memory any more: a
//   session would be lost when the process exits, since the migration has
//   already listed what it moves. Creating, forking or importing one, and
//   loading or adopting one from the disk tier, is UNAVAILABLE then (the
//   file stays where it is; the client retries on another replica).
//
// Thread-safe.
#ifndef TVQ_SERVER_SESSIONS_SESSION_STORE_H_
#define TVQ_SERVER_SESSIONS_SESSION_STORE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/sessions/session.h"

namespace tvq::sessions {

struct SessionStoreOptions {
  // Host bytes all sessions may take together (--session-memory-bytes).
  int64_t memory_bytes = int64_t{1} << 30;
  // What one session is charged (StatePool::ExportBytes); >= 1.
  int64_t bytes_per_state = 1;
  // TTL of a session that sets none (--session-ttl); > 0.
  absl::Duration default_ttl = absl::Hours(1);
  // Longest TTL a session may ask for.
  absl::Duration max_ttl = absl::Hours(24 * 30);
  // Sessions one owner (an API key) may hold here at once
  // (--max-sessions-per-key); 0 = no limit; checked when a session is
  // created (created, forked, imported). Sessions without an owner (no keys,
  // prefix-reuse entries) and those created with NewSession::counted false
  // never count; sessions loaded from the disk tier or migrated in count
  // against their owner but are never refused for it.
  int64_t max_sessions_per_owner = 0;
};

struct NewSession {
  // Empty: the store makes one.
  std::string session_id;
  // Zero: the default TTL.
  absl::Duration ttl = absl::ZeroDuration();
  bool pinned = false;
  SessionSnapshot snapshot;
  // Created already leased to a request (CreateSession with a prompt: the
  // session is visible, and busy, while its prompt is prefilled).
  bool leased = false;
  // A prefix-reuse entry (above); session_id is its internal key.
  bool hidden = false;
  // Who creates it (auth::KeyOwnerId of the caller's API key); empty = no
  // one. Only its owner sees a session that has one (Caller, below).
  std::string owner;
  // Counted against max_sessions_per_owner (a session that lives only while
  // its request runs is not).
  bool counted = true;
};

// A session as the disk tier stores it.
struct SpilledSession {
  std::string session_id;
  // With its state when saved; without (metadata only) when listed.
  SessionSnapshot snapshot;
  absl::Duration ttl;
  bool pinned = false;
  absl::Time last_used;
  // NewSession::owner ("" = none).
  std::string owner;
};

// Where evicted sessions go (session_disk.h). Called under the store's lock.
class SessionSpill {
 public:
  virtual ~SessionSpill() = default;
  // Returns the bytes written.
  virtual absl::StatusOr<int64_t> Save(const SpilledSession& session) = 0;
  // Claims the saved session and removes it from the tier, every field
  // checked; errors name the file. NOT_FOUND when there is none (also when
  // another server sharing the tier took it first).
  virtual absl::StatusOr<SpilledSession> Take(
      const std::string& session_id) = 0;
  // Reads the saved session, every field checked, and leaves it in the
  // tier. NOT_FOUND when there is none.
  virtual absl::StatusOr<SpilledSession> Read(
      const std::string& session_id) const = 0;
  // Whether the tier holds the session (written by this server or another).
  virtual bool Exists(const std::string& session_id) const = 0;
  // Removes the saved session; with `only_if_last_used`, only when the saved
  // one still has that last use (not a newer one another server wrote).
  virtual void Remove(const std::string& session_id,
                      std::optional<absl::Time> only_if_last_used) = 0;
};

// Counters and gauges for metrics and GetModelInfo.
struct SessionStoreStats {
  int sessions_host = 0;
  int sessions_slot = 0;
  int sessions_disk = 0;
  int pinned = 0;
  int64_t state_bytes_host = 0;
  int64_t state_bytes_slot = 0;
  int64_t state_bytes_disk = 0;
  // Prefix-reuse entries and their bytes (not counted above).
  int prefix_entries = 0;
  int64_t prefix_bytes = 0;
  // Sessions written to disk (evicted or at shutdown), and loaded back.
  uint64_t spills_total = 0;
  uint64_t loads_total = 0;
  // Of the loads: sessions this server did not hold, found in a shared
  // --session-dir (another server wrote them: drained, evicted).
  uint64_t adoptions_total = 0;
  // Sessions the budget holds (memory_bytes / bytes_per_state).
  int64_t capacity = 0;
  uint64_t evictions_total = 0;
  uint64_t expiries_total = 0;
};

// Sessions are isolated by owner: a session that has one exists only for a
// caller with the same owner; to any other caller it is NOT_FOUND with the
// message of an unknown id (nothing says it exists, except ALREADY_EXISTS
// for a taken id: ids are one namespace per server). `caller` is the
// auth::KeyOwnerId of the caller's API key; "" (a server without keys, or
// the server itself) sees every session. Sessions without an owner are
// everyone's.
class SessionStore {
 public:
  // `now` is the clock (tests pass their own).
  explicit SessionStore(const SessionStoreOptions& options,
                        std::function<absl::Time()> now = &absl::Now);

  const SessionStoreOptions& options() const { return options_; }

  // Turns the disk tier on (null: off). `spill` must outlive the store.
  void SetSpill(SessionSpill* spill);
  // A session found on disk at start-up (snapshot without its state).
  // ALREADY_EXISTS, INVALID_ARGUMENT (id).
  absl::Status AddSpilled(SpilledSession session);
  // Saves every idle session held in memory to disk (at shutdown); returns
  // the first error, after trying them all.
  absl::Status SpillAll();

  // Migration at drain. The ids of the sessions held in host memory (idle
  // or with a request running on them), ordered by id.
  std::vector<std::string> InMemory();
  // Takes no more sessions into memory (above). Call before InMemory.
  void BeginDrain();
  // Leases one of them for its migration and returns it (with its state),
  // first waiting up to `busy_wait` for a request that holds it to end.
  // NOT_FOUND (closed meanwhile), FAILED_PRECONDITION (on disk: nothing to
  // move), UNAVAILABLE (still busy after `busy_wait`).
  absl::StatusOr<SpilledSession> BeginMigration(const std::string& session_id,
                                                absl::Duration busy_wait);
  // Another server holds it now: removed here (NOT_FOUND says it moved).
  void FinishMigration(const std::string& session_id);
  // The push failed: the lease ends, and with `to_disk` (and the tier on)
  // the session is saved to disk; returns the bytes written, or why not.
  absl::StatusOr<int64_t> AbortMigration(const std::string& session_id,
                                         bool to_disk);
  // Saves one idle in-memory session to disk; returns the bytes written.
  absl::StatusOr<int64_t> SpillOne(const std::string& session_id);

  // INVALID_ARGUMENT (bad id, ttl out of range), ALREADY_EXISTS (id taken),
  // RESOURCE_EXHAUSTED (budget full of pinned or busy sessions, or the
  // owner holds max_sessions_per_owner already).
  absl::StatusOr<SessionInfo> Create(NewSession session);

  // Leases the session to one request and returns its state.
  // NOT_FOUND, FAILED_PRECONDITION (busy).
  absl::StatusOr<SessionSnapshot> Begin(const std::string& session_id,
                                        const std::string& caller = "");
  // Ends the lease with the request's result.
  absl::StatusOr<SessionInfo> Commit(const std::string& session_id,
                                     SessionSnapshot next);
  // Ends the lease; the session keeps the state it had.
  void Abort(const std::string& session_id);
  // Ends the lease and removes the session (a CreateSession whose prompt
  // failed: it never existed).
  void Discard(const std::string& session_id);

  // The longest prefix-reuse entry among `candidates` ((token count, key),
  // longest first) whose tokens equal the first token-count tokens of
  // `prompt`; counts as a use. nullopt when none.
  std::optional<SessionSnapshot> FindPrefix(
      const std::vector<std::pair<size_t, std::string>>& candidates,
      std::span<const int32_t> prompt);

  // The token counts of the prefix-reuse entries, longest first (so that a
  // lookup hashes only the prefixes that could match).
  std::vector<size_t> PrefixLengths();

  // The last committed state (Fork, Export). Counts as a use.
  absl::StatusOr<SessionSnapshot> Snapshot(const std::string& session_id,
                                           const std::string& caller = "");
  // The TTL and pinned flag of a session (a fork takes its TTL).
  absl::StatusOr<absl::Duration> Ttl(const std::string& session_id,
                                     const std::string& caller = "");

  absl::StatusOr<SessionInfo> Get(const std::string& session_id,
                                  const std::string& caller = "");
  // Every session `caller` sees, ordered by id.
  std::vector<SessionInfo> List(const std::string& caller = "");
  // NOT_FOUND, FAILED_PRECONDITION (a request is running on it).
  absl::Status Close(const std::string& session_id,
                     const std::string& caller = "");

  SessionStoreStats Stats();

  // The id rule (above); INVALID_ARGUMENT naming `field`.
  static absl::Status CheckId(const std::string& session_id,
                              std::string_view field);

 private:
  struct Record {
    SessionSnapshot snapshot;
    absl::Duration ttl;
    bool pinned = false;
    bool leased = false;
    absl::Time last_used;
    // On disk (snapshot.state is null then; disk_bytes is what it holds).
    bool on_disk = false;
    int64_t disk_bytes = 0;
    bool hidden = false;
    // Adopted from a shared disk tier: written back after each request.
    bool guest = false;
    // NewSession::owner; `counted`: it counts in owner_sessions_.
    std::string owner;
    bool counted = false;
  };
  enum class GoneReason {
    kClosed,
    kExpired,
    kEvicted,
    kUnloadable,
    kTakenElsewhere,
    kMigrated
  };

  SessionInfo InfoLocked(const std::string& id, const Record& record) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status NotFoundLocked(const std::string& id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Evicts prefix-reuse entries, then (unless `entries_only`) LRU idle
  // unpinned sessions, until one more fits; false if it cannot.
  bool MakeRoomLocked(bool entries_only = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void RemoveLocked(const std::string& id, GoneReason reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::StatusOr<Record*> FindLocked(const std::string& id,
                                     const std::string& caller = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Brings a disk session back into memory (making room first).
  absl::Status LoadLocked(const std::string& id, Record& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Saves `record` to disk and drops its state from memory; the bytes
  // written.
  absl::StatusOr<int64_t> SpillLocked(const std::string& id, Record& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // A session this store does not hold, from the (shared) disk tier: taken
  // and held in memory here. NOT_FOUND when the tier has none.
  absl::StatusOr<Record*> AdoptLocked(const std::string& id,
                                      const std::string& caller)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // For reads (Get, Ttl, Snapshot): the record held here, or else one read
  // from the shared disk tier into `scratch` and left there. A read never
  // takes a session into this server's memory: taken, it would live only
  // here until its next request, invisible to the other servers and lost
  // if this one died.
  absl::StatusOr<const Record*> ReadLocked(const std::string& id,
                                           Record& scratch,
                                           const std::string& caller)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  int64_t InMemoryLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The record counts against its owner's limit (when it has one), or no
  // longer does.
  void CountOwnerLocked(Record& record, const std::string& owner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void ForgetOwnerLocked(const Record& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Whether `caller` may see `record` (the isolation rule above).
  static bool VisibleTo(const Record& record, const std::string& caller);
  // UNAVAILABLE naming `what` once BeginDrain ran; OK before.
  absl::Status CheckNotDrainingLocked(const std::string& id,
                                      std::string_view what) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // After a request on a guest: back to the disk tier (best effort: on
  // failure it stays in memory here).
  void WriteBackGuestLocked(const std::string& id, Record& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const SessionStoreOptions options_;
  const std::function<absl::Time()> now_;
  absl::Mutex mutex_;
  absl::flat_hash_map<std::string, Record> sessions_ ABSL_GUARDED_BY(mutex_);
  // What happened to recently removed ids (bounded, oldest dropped first).
  absl::flat_hash_map<std::string, GoneReason> gone_ ABSL_GUARDED_BY(mutex_);
  std::deque<std::string> gone_order_ ABSL_GUARDED_BY(mutex_);
  uint64_t evictions_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t expiries_ ABSL_GUARDED_BY(mutex_) = 0;
  // Token count -> prefix-reuse entries of that length.
  absl::flat_hash_map<size_t, int> prefix_lengths_ ABSL_GUARDED_BY(mutex_);
  uint64_t spills_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t loads_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t adoptions_ ABSL_GUARDED_BY(mutex_) = 0;
  SessionSpill* spill_ ABSL_GUARDED_BY(mutex_) = nullptr;
  bool draining_ ABSL_GUARDED_BY(mutex_) = false;
  // Owner -> the sessions it holds (only owners holding one).
  absl::flat_hash_map<std::string, int64_t> owner_sessions_
      ABSL_GUARDED_BY(mutex_);
};

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_SESSION_STORE_H_
