// Sessions over the scheduler: the transport-free API every front end (gRPC
// today, HTTP next) calls. It keeps sessions in the host-memory tier
// (SessionStore) and runs their requests through the scheduler: a request on
// a session imports the session's saved state into a free slot
// (StartFrom::kImport), and when it succeeds the slot's final state is saved
// back (KeepState::save_to) before its sink hears of the success, so the next
// turn finds the session advanced. A failed, cancelled or expired request
// leaves the session exactly as it was. A session occupies a slot only while
// a request runs on it.
//
// Tokens: a session holds the state of every token but its last, which is
// pending (session.h). A request's input is [pending token] + its own tokens;
// no eos prefix is added inside a session, except to the first tokens of an
// empty session unless no_eos_prefix is set (the rule of Generate).
//
// Sessions are isolated by API key (SessionStore): every call names its
// caller (auth::KeyOwnerId, "" without keys), and a session another key
// created is NOT_FOUND to it, like an unknown id. Automatic prefix reuse is
// per key too: a request only ever resumes from a state its own key left.
//
// Errors name the session: NOT_FOUND (unknown, closed, expired or evicted:
// the message says which), FAILED_PRECONDITION (another request is running
// on it: a second concurrent request fails at once, it never waits),
// ALREADY_EXISTS (id taken), RESOURCE_EXHAUSTED (budget full of pinned or
// busy sessions), INVALID_ARGUMENT (nothing to generate from, bad id), and
// for Import the codes of session_blob.h.
//
// Thread-safe. Callbacks and sinks run on the scheduler's thread (or on the
// calling thread when nothing needs the model) and must not block.
#ifndef TVQ_SERVER_SESSIONS_SESSION_MANAGER_H_
#define TVQ_SERVER_SESSIONS_SESSION_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/engine/state_pool.h"
#include "server/scheduler/request.h"
#include "server/scheduler/scheduler.h"
#include "server/sessions/session.h"
#include "server/sessions/session_blob.h"
#include "server/sessions/session_disk.h"
#include "server/sessions/session_migration.h"
#include "server/sessions/session_store.h"

namespace tvq::sessions {

// Counters of the blob traffic (metrics).
struct SessionTransferStats {
  uint64_t exports_total = 0;
  uint64_t export_bytes_total = 0;
  uint64_t imports_total = 0;
  uint64_t import_bytes_total = 0;
  // Imports refused (any check of session_blob.h or of the state).
  uint64_t import_failures_total = 0;
  // Automatic prefix reuse: requests looked up, requests that found a
  // retained state, and the tokens those states had absorbed.
  uint64_t prefix_queries_total = 0;
  uint64_t prefix_hits_total = 0;
  uint64_t prefix_cached_tokens_total = 0;
  // Migration on drain (Migrate): sessions moved to the peer or the disk
  // tier, the bytes moved, and pushes or writes that failed.
  uint64_t migrations_peer_total = 0;
  uint64_t migrations_disk_total = 0;
  uint64_t migration_bytes_peer_total = 0;
  uint64_t migration_bytes_disk_total = 0;
  uint64_t migration_failures_peer_total = 0;
  uint64_t migration_failures_disk_total = 0;
};

class SessionManager {
 public:
  using InfoCallback = std::function<void(absl::StatusOr<SessionInfo>)>;

  // `scheduler` and `pool` must outlive the manager; `pool` is only read
  // (its shape: ExportBytes, ValidateExport).
  SessionManager(scheduler::Scheduler& scheduler,
                 const runtime::StatePool& pool, const BlobIdentity& identity,
                 int32_t eos_id, const SessionStoreOptions& options);

  struct CreateParams {
    // Empty: the server makes one.
    std::string session_id;
    // Zero: the default (--session-ttl).
    absl::Duration ttl = absl::ZeroDuration();
    bool pinned = false;
    // The prompt as given (no eos prefix); may be empty (an empty session).
    std::vector<int32_t> prompt;
    bool no_eos_prefix = false;
    std::string request_id;
    absl::Time deadline = absl::InfiniteFuture();
    // Who asks (metrics only).
    scheduler::Frontend frontend = scheduler::Frontend::kGrpc;
    // With automatic prefix reuse on (SetPrefixReuse): start from the
    // longest retained end-of-request state whose tokens begin the prompt
    // (eos prefix included) and prefill only the rest, as
    // SubmitGenerationReusing does; SessionInfo::cached_tokens says how many
    // tokens that state supplied. The session's state is the same either
    // way.
    bool reuse_prefix = false;
    // The caller's API key (auth::KeyOwnerId; empty = none): the session's
    // owner, the only one who sees it, and counted against
    // --max-sessions-per-key (SessionStoreOptions) unless not `counted`.
    std::string owner;
    bool counted = true;
  };
  // Creates a session and prefills its prompt. `done` is called once.
  void Create(CreateParams params, InfoCallback done);

  struct AppendParams {
    std::string session_id;
    // Non-empty.
    std::vector<int32_t> tokens;
    bool no_eos_prefix = false;
    std::string request_id;
    absl::Time deadline = absl::InfiniteFuture();
    scheduler::Frontend frontend = scheduler::Frontend::kGrpc;
    // Who asks (CreateParams::owner).
    std::string caller;
  };
  // Prefills more tokens into a session. `done` is called once.
  void Append(AppendParams params, InfoCallback done);

  // Generate on a session: `request.prompt` is the new tokens as given (may
  // be empty when the session holds a token); start_from and keep are set
  // here. On OK the scheduler runs it and ends it through `sink`; its
  // Completion's usage.cached_tokens says how many tokens the session
  // supplied. Errors at once: the session's, or the scheduler's.
  absl::StatusOr<scheduler::RequestHandle> SubmitGeneration(
      const std::string& session_id, bool no_eos_prefix,
      scheduler::GenerationRequest request,
      std::shared_ptr<scheduler::TokenSink> sink,
      const std::string& caller = "");
  // A generation without a session, with automatic prefix reuse when it is
  // on (SetPrefixReuse): it resumes from the longest retained end-of-request
  // state whose tokens begin `request.prompt` and prefills only the rest
  // (usage.cached_tokens = the tokens that state absorbed); on success its own
  // final state is retained for later requests (within the same budget,
  // evicted before any session). The result equals a cold run. Off: the
  // scheduler's SubmitGeneration as is. Retained states are `caller`'s:
  // only requests of the same key resume from them.
  absl::StatusOr<scheduler::RequestHandle> SubmitGenerationReusing(
      scheduler::GenerationRequest request,
      std::shared_ptr<scheduler::TokenSink> sink,
      const std::string& caller = "");
  void SetPrefixReuse(bool enabled) { prefix_reuse_ = enabled; }
  bool prefix_reuse() const { return prefix_reuse_; }

  // Score on a session: scores `request.tokens` (as given) after the
  // session's tokens; the result's first entry scores the first new token
  // given the whole session. The session then holds them too.
  absl::StatusOr<scheduler::RequestHandle> SubmitScore(
      const std::string& session_id, bool no_eos_prefix,
      scheduler::ScoreRequest request,
      std::shared_ptr<scheduler::ScoreSink> sink,
      const std::string& caller = "");

  // An independent copy of the session's last committed state (no prefill;
  // the saved bytes are shared until either session advances). The fork
  // takes the source's TTL and is not pinned; it belongs to `caller` (as
  // CreateParams::owner; `counted` too).
  absl::StatusOr<SessionInfo> Fork(const std::string& session_id,
                                   const std::string& new_session_id,
                                   const std::string& caller = "",
                                   bool counted = true);
  // The session as a blob (session_blob.h). The blob carries no owner: an
  // import belongs to whoever imports it.
  absl::StatusOr<std::string> Export(const std::string& session_id,
                                     const std::string& caller = "");
  // A new session from a blob, every field checked before it is stored.
  // `session_id` empty: the server makes one. `ttl` zero: the default;
  // `pinned` as CreateSession's (a migrated session keeps both); `owner` as
  // CreateParams::owner.
  absl::StatusOr<SessionInfo> Import(std::string_view blob,
                                     const std::string& session_id,
                                     absl::Duration ttl = absl::ZeroDuration(),
                                     bool pinned = false,
                                     const std::string& owner = "");

  absl::StatusOr<SessionInfo> Get(const std::string& session_id,
                                  const std::string& caller = "");
  // The sessions `caller` sees.
  std::vector<SessionInfo> List(const std::string& caller = "");
  absl::Status Close(const std::string& session_id,
                     const std::string& caller = "");

  // Turns on the disk tier in `directory` (session_disk.h) and lists the
  // sessions saved there. Returns one line per file skipped (corrupt,
  // foreign, ...); an error only when the directory is unusable.
  absl::StatusOr<std::vector<std::string>> OpenDisk(
      const std::string& directory);
  // Saves every idle session to disk (at shutdown); OK when the disk tier is
  // off.
  absl::Status SpillAll() { return store_.SpillAll(); }
  // Migration on drain (session_migration.h): every session held in memory
  // goes to `peer` (may be null), or to the disk tier when there is no peer
  // or the push fails. Call when no request runs any more (after the
  // scheduler's drain); a session a request still holds is waited for (a
  // few seconds at most, then reported lost).
  MigrationReport Migrate(SessionPeer* peer);

  SessionStoreStats Stats() { return store_.Stats(); }
  SessionTransferStats TransferStats() const;
  const SessionStoreOptions& options() const { return store_.options(); }

 private:
  class GenerationTurn;
  class ScoreTurn;
  class AppendTurn;
  class PrefixTurn;

  // The longest retained prefix-reuse state whose tokens begin `prompt` and
  // whose pending token is the prompt's next one (counted in the prefix
  // statistics); nullopt when none, or when prefix reuse is off.
  std::optional<SessionSnapshot> FindRetainedPrefix(
      std::span<const int32_t> prompt, const std::string& owner);
  // The input of a request on `base`: [pending] + eos prefix (an empty
  // session, unless no_eos_prefix) + tokens. `added` gets the tokens the
  // session gains (prefix + tokens).
  std::vector<int32_t> TurnInput(const SessionSnapshot& base,
                                 const std::vector<int32_t>& tokens,
                                 bool no_eos_prefix,
                                 std::vector<int32_t>* added) const;
  // Feeds `feed` (all but its last token, kept pending) into the leased
  // session `session_id` whose state is `base`, then commits.
  void RunAppend(const std::string& session_id, const SessionSnapshot& base,
                 std::vector<int32_t> feed, std::vector<int32_t> added,
                 std::string request_id, absl::Time deadline,
                 scheduler::Frontend frontend, InfoCallback done,
                 bool discard_on_failure);

  scheduler::Scheduler& scheduler_;
  const runtime::StatePool& pool_;
  const BlobIdentity identity_;
  const int32_t eos_id_;
  // Before the store, which points to it.
  std::unique_ptr<SessionDisk> disk_;
  SessionStore store_;
  std::atomic<bool> prefix_reuse_{false};
  std::atomic<uint64_t> exports_{0}, export_bytes_{0}, imports_{0},
      import_bytes_{0}, import_failures_{0}, prefix_queries_{0},
      prefix_hits_{0}, prefix_cached_tokens_{0}, migrations_peer_{0},
      migrations_disk_{0}, migration_bytes_peer_{0}, migration_bytes_disk_{0},
      migration_failures_peer_{0}, migration_failures_disk_{0};
};

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_SESSION_MANAGER_H_
