#include "server/sessions/session_store.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"

namespace tvq::sessions {
namespace {

constexpr size_t kMaxIdLength = 128;
constexpr size_t kRememberedGoneIds = 4096;

std::string MakeId() {
  thread_local absl::BitGen generator;
  return absl::StrFormat("sess-%016x", absl::Uniform<uint64_t>(generator));
}

}  // namespace

SessionStore::SessionStore(const SessionStoreOptions& options,
                           std::function<absl::Time()> now)
    : options_(options), now_(std::move(now)) {}

absl::Status SessionStore::CheckId(const std::string& session_id,
                                   std::string_view field) {
  if (session_id.empty() || session_id.size() > kMaxIdLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s must have 1 to %d characters, got %d", field,
                        kMaxIdLength, session_id.size()));
  }
  for (char c : session_id) {
    if (c <= 0x20 || c > 0x7E) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s must be printable ASCII without spaces, got a byte 0x%02x", field,
          static_cast<unsigned char>(c)));
    }
  }
  return absl::OkStatus();
}

SessionInfo SessionStore::InfoLocked(const std::string& id,
                                     const Record& record) const {
  SessionInfo info;
  info.session_id = id;
  info.position = record.snapshot.token_count;
  info.state_bytes = record.snapshot.state_bytes();
  info.tier = record.leased    ? SessionTier::kSlot
              : record.on_disk ? SessionTier::kDisk
                               : SessionTier::kHost;
  if (record.on_disk) info.state_bytes = record.disk_bytes;
  info.pinned = record.pinned;
  info.last_used = record.last_used;
  info.expires_at = record.pinned || record.leased
                        ? absl::InfiniteFuture()
                        : record.last_used + record.ttl;
  return info;
}

absl::Status SessionStore::NotFoundLocked(const std::string& id) const {
  const auto gone = gone_.find(id);
  if (gone == gone_.end()) {
    return absl::NotFoundError(absl::StrFormat(
        "session \"%s\" does not exist%s", id,
        spill_ != nullptr ? " (neither on this server nor in --session-dir)"
                          : ""));
  }
  const char* what = "was closed";
  switch (gone->second) {
    case GoneReason::kClosed:
      break;
    case GoneReason::kExpired:
      what = "expired (idle longer than its ttl)";
      break;
    case GoneReason::kEvicted:
      what =
          "was evicted (least recently used when the session memory budget, "
          "--session-memory-bytes, was full)";
      break;
    case GoneReason::kUnloadable:
      what = "was closed: its file in --session-dir could not be loaded";
      break;
    case GoneReason::kTakenElsewhere:
      what =
          "is no longer in --session-dir: another server sharing the "
          "directory took it (ask the server that holds it)";
      break;
    case GoneReason::kMigrated:
      what = "was moved to another server when this one drained";
      break;
  }
  if (gone->second == GoneReason::kMigrated) {
    // Retryable: the router sends the next try to the replica that has it.
    return absl::UnavailableError(absl::StrFormat(
        "session \"%s\" %s; retry (another replica holds it)", id, what));
  }
  return absl::NotFoundError(absl::StrFormat("session \"%s\" %s", id, what));
}

void SessionStore::RemoveLocked(const std::string& id, GoneReason reason) {
  const auto it = sessions_.find(id);
  if (it != sessions_.end() && it->second.on_disk && spill_ != nullptr) {
    // An expired file goes only if it is still the one this store listed:
    // a server sharing the directory may have written a newer one since.
    spill_->Remove(id, reason == GoneReason::kExpired
                           ? std::optional<absl::Time>(it->second.last_used)
                           : std::nullopt);
  }
  const bool hidden = it != sessions_.end() && it->second.hidden;
  if (hidden) {
    const size_t length = static_cast<size_t>(it->second.snapshot.token_count);
    if (--prefix_lengths_[length] <= 0) prefix_lengths_.erase(length);
    sessions_.erase(it);
    return;
  }
  if (it != sessions_.end()) ForgetOwnerLocked(it->second);
  sessions_.erase(id);
  if (gone_.insert_or_assign(id, reason).second) gone_order_.push_back(id);
  while (gone_order_.size() > kRememberedGoneIds) {
    gone_.erase(gone_order_.front());
    gone_order_.pop_front();
  }
}

void SessionStore::ExpireLocked(absl::Time now) {
  std::vector<std::string> expired;
  for (const auto& [id, record] : sessions_) {
    if (!record.pinned && !record.leased &&
        record.last_used + record.ttl <= now) {
      expired.push_back(id);
    }
  }
  for (const std::string& id : expired) {
    RemoveLocked(id, GoneReason::kExpired);
    ++expiries_;
  }
}

int64_t SessionStore::InMemoryLocked() const {
  int64_t count = 0;
  for (const auto& [id, record] : sessions_) {
    if (!record.on_disk) ++count;
  }
  return count;
}

absl::StatusOr<int64_t> SessionStore::SpillLocked(const std::string& id,
                                                  Record& record) {
  SpilledSession spilled;
  spilled.session_id = id;
  spilled.snapshot = record.snapshot;
  spilled.ttl = record.ttl;
  spilled.pinned = record.pinned;
  spilled.last_used = record.last_used;
  spilled.owner = record.owner;
  absl::StatusOr<int64_t> written = spill_->Save(spilled);
  if (!written.ok()) return written.status();
  record.disk_bytes = record.snapshot.state_bytes();
  record.snapshot.state.reset();
  record.on_disk = true;
  ++spills_;
  return written;
}

absl::Status SessionStore::CheckNotDrainingLocked(const std::string& id,
                                                  std::string_view what) const {
  if (!draining_) return absl::OkStatus();
  return absl::UnavailableError(absl::StrFormat(
      "%sthis server is draining and takes no session into memory (%s); "
      "retry on another replica",
      id.empty() ? "" : absl::StrFormat("session \"%s\": ", id), what));
}

absl::Status SessionStore::LoadLocked(const std::string& id, Record& record) {
  if (!record.on_disk) return absl::OkStatus();
  if (absl::Status status =
          CheckNotDrainingLocked(id, "it stays in --session-dir");
      !status.ok()) {
    return status;
  }
  if (spill_ == nullptr) {
    RemoveLocked(id, GoneReason::kUnloadable);
    return absl::InternalError(absl::StrFormat(
        "session \"%s\": on disk, but the disk tier is off", id));
  }
  // Room for it in memory first (it does not count while on disk), so that
  // a session taken from the directory always has a place.
  if (!MakeRoomLocked()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "session \"%s\" is on disk and the session memory budget is full of "
        "pinned or busy sessions (--session-memory-bytes=%d)",
        id, options_.memory_bytes));
  }
  absl::StatusOr<SpilledSession> taken = spill_->Take(id);
  if (!taken.ok()) {
    if (taken.status().code() == absl::StatusCode::kUnavailable) {
      return taken.status();  // a race with another server; retry
    }
    const bool elsewhere = absl::IsNotFound(taken.status());
    record.on_disk = false;  // whatever the directory holds now stays there
    RemoveLocked(id, elsewhere ? GoneReason::kTakenElsewhere
                               : GoneReason::kUnloadable);
    if (elsewhere) return NotFoundLocked(id);
    return absl::Status(
        taken.status().code(),
        absl::StrFormat("session \"%s\": loading it from disk failed: %s", id,
                        taken.status().message()));
  }
  record.snapshot = std::move(taken->snapshot);
  record.on_disk = false;
  record.disk_bytes = 0;
  ++loads_;
  return absl::OkStatus();
}

absl::StatusOr<SessionStore::Record*> SessionStore::AdoptLocked(
    const std::string& id, const std::string& caller) {
  if (spill_ == nullptr || !CheckId(id, "session_id").ok() ||
      !spill_->Exists(id)) {
    return NotFoundLocked(id);
  }
  if (absl::Status status =
          CheckNotDrainingLocked(id, "it stays in --session-dir");
      !status.ok()) {
    return status;
  }
  if (!MakeRoomLocked()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "session \"%s\" is in --session-dir and the session memory budget is "
        "full of pinned or busy sessions (--session-memory-bytes=%d)",
        id, options_.memory_bytes));
  }
  absl::StatusOr<SpilledSession> taken = spill_->Take(id);
  if (!taken.ok()) {
    if (absl::IsNotFound(taken.status())) return NotFoundLocked(id);
    return absl::Status(
        taken.status().code(),
        absl::StrFormat("session \"%s\": loading it from --session-dir "
                        "failed: %s",
                        id, taken.status().message()));
  }
  Record record;
  record.snapshot = std::move(taken->snapshot);
  record.ttl = taken->ttl;
  record.pinned = taken->pinned;
  record.last_used = std::max(taken->last_used, now_());
  record.guest = true;
  CountOwnerLocked(record, taken->owner);
  gone_.erase(id);
  ++loads_;
  ++adoptions_;
  Record& adopted =
      sessions_.insert_or_assign(id, std::move(record)).first->second;
  if (!VisibleTo(adopted, caller)) {
    // Another key's session: back to the directory for its owner (on a
    // failed write it stays here, still its owner's).
    WriteBackGuestLocked(id, adopted);
    return NotFoundLocked(id);
  }
  return &adopted;
}

absl::StatusOr<const SessionStore::Record*> SessionStore::ReadLocked(
    const std::string& id, Record& scratch, const std::string& caller) {
  const auto it = sessions_.find(id);
  if (it != sessions_.end()) {
    // Prefix-reuse entries are not sessions.
    if (it->second.hidden || !VisibleTo(it->second, caller)) {
      return NotFoundLocked(id);
    }
    return &it->second;
  }
  if (spill_ == nullptr || !CheckId(id, "session_id").ok()) {
    return NotFoundLocked(id);
  }
  absl::StatusOr<SpilledSession> read = spill_->Read(id);
  if (!read.ok()) {
    if (absl::IsNotFound(read.status())) return NotFoundLocked(id);
    return absl::Status(
        read.status().code(),
        absl::StrFormat("session \"%s\": reading it from --session-dir "
                        "failed: %s",
                        id, read.status().message()));
  }
  scratch.snapshot = std::move(read->snapshot);
  scratch.ttl = read->ttl;
  scratch.pinned = read->pinned;
  scratch.last_used = read->last_used;
  scratch.owner = read->owner;
  scratch.on_disk = true;
  scratch.disk_bytes = scratch.snapshot.state_bytes();
  if (!VisibleTo(scratch, caller)) return NotFoundLocked(id);
  return &scratch;
}

void SessionStore::WriteBackGuestLocked(const std::string& id,
                                       Record& record) {
  if (!record.guest || spill_ == nullptr || record.on_disk) return;
  SpillLocked(id, record).IgnoreError();
}

void SessionStore::SetSpill(SessionSpill* spill) {
  absl::MutexLock lock(&mutex_);
  spill_ = spill;
}

absl::Status SessionStore::AddSpilled(SpilledSession session) {
  if (absl::Status status = CheckId(session.session_id, "session_id");
      !status.ok()) {
    return status;
  }
  absl::MutexLock lock(&mutex_);
  if (sessions_.contains(session.session_id)) {
    return absl::AlreadyExistsError(
        absl::StrFormat("session \"%s\" already exists", session.session_id));
  }
  Record record;
  record.disk_bytes = session.snapshot.state_bytes();
  record.snapshot = std::move(session.snapshot);
  record.snapshot.state.reset();
  record.ttl = session.ttl;
  record.pinned = session.pinned;
  record.last_used = session.last_used;
  record.on_disk = true;
  CountOwnerLocked(record, session.owner);
  sessions_.emplace(session.session_id, std::move(record));
  return absl::OkStatus();
}

absl::Status SessionStore::SpillAll() {
  absl::MutexLock lock(&mutex_);
  if (spill_ == nullptr) return absl::OkStatus();
  absl::Status first;
  for (auto& [id, record] : sessions_) {
    if (record.on_disk || record.leased || record.hidden) continue;
    first.Update(SpillLocked(id, record).status());
  }
  return first;
}

void SessionStore::BeginDrain() {
  absl::MutexLock lock(&mutex_);
  draining_ = true;
}

std::vector<std::string> SessionStore::InMemory() {
  absl::MutexLock lock(&mutex_);
  std::vector<std::string> ids;
  for (const auto& [id, record] : sessions_) {
    if (!record.on_disk && !record.hidden) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::StatusOr<SpilledSession> SessionStore::BeginMigration(
    const std::string& session_id, absl::Duration busy_wait) {
  absl::MutexLock lock(&mutex_);
  // Every lease ends under this mutex (Commit, Abort, Discard, Close).
  const auto released = [this, &session_id]() {
    mutex_.AssertReaderHeld();
    const auto it = sessions_.find(session_id);
    return it == sessions_.end() || !it->second.leased;
  };
  if (!mutex_.AwaitWithTimeout(absl::Condition(&released), busy_wait)) {
    return absl::UnavailableError(absl::StrFormat(
        "session \"%s\" was still busy %s into the migration (a request "
        "kept running on it)",
        session_id, absl::FormatDuration(busy_wait)));
  }
  const auto it = sessions_.find(session_id);
  if (it == sessions_.end() || it->second.hidden) {
    return NotFoundLocked(session_id);
  }
  Record& record = it->second;
  if (record.on_disk) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "session \"%s\" is on disk: not migrated", session_id));
  }
  record.leased = true;
  SpilledSession session;
  session.session_id = session_id;
  session.snapshot = record.snapshot;
  session.ttl = record.ttl;
  session.pinned = record.pinned;
  session.last_used = record.last_used;
  session.owner = record.owner;
  return session;
}

void SessionStore::FinishMigration(const std::string& session_id) {
  absl::MutexLock lock(&mutex_);
  if (sessions_.contains(session_id)) {
    RemoveLocked(session_id, GoneReason::kMigrated);
  }
}

absl::StatusOr<int64_t> SessionStore::AbortMigration(
    const std::string& session_id, bool to_disk) {
  absl::MutexLock lock(&mutex_);
  const auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return NotFoundLocked(session_id);
  it->second.leased = false;
  if (!to_disk) return int64_t{0};
  if (spill_ == nullptr) {
    return absl::FailedPreconditionError("no disk tier (--session-dir)");
  }
  return SpillLocked(session_id, it->second);
}

absl::StatusOr<int64_t> SessionStore::SpillOne(const std::string& session_id) {
  absl::MutexLock lock(&mutex_);
  const auto it = sessions_.find(session_id);
  if (it == sessions_.end() || it->second.hidden) {
    return NotFoundLocked(session_id);
  }
  if (spill_ == nullptr) {
    return absl::FailedPreconditionError("no disk tier (--session-dir)");
  }
  if (it->second.leased || it->second.on_disk) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "session \"%s\" is %s", session_id,
        it->second.leased ? "busy" : "already on disk"));
  }
  return SpillLocked(session_id, it->second);
}

bool SessionStore::MakeRoomLocked(bool entries_only) {
  const int64_t capacity = options_.memory_bytes / options_.bytes_per_state;
  while (InMemoryLocked() + 1 > capacity) {
    // Prefix-reuse entries go first, least recently used first.
    const std::string* oldest_entry = nullptr;
    absl::Time entry_use = absl::InfiniteFuture();
    for (const auto& [id, record] : sessions_) {
      if (!record.hidden || record.leased) continue;
      if (oldest_entry == nullptr || record.last_used < entry_use) {
        oldest_entry = &id;
        entry_use = record.last_used;
      }
    }
    if (oldest_entry != nullptr) {
      const std::string id = *oldest_entry;
      RemoveLocked(id, GoneReason::kEvicted);
      continue;
    }
    if (entries_only) return false;  // an entry never evicts a session
    const std::string* oldest = nullptr;
    absl::Time oldest_use = absl::InfiniteFuture();
    for (const auto& [id, record] : sessions_) {
      if (record.pinned || record.leased || record.on_disk) continue;
      if (oldest == nullptr || record.last_used < oldest_use ||
          (record.last_used == oldest_use && id < *oldest)) {
        oldest = &id;
        oldest_use = record.last_used;
      }
    }
    if (oldest == nullptr) return false;
    const std::string id = *oldest;
    ++evictions_;
    // To disk when the tier is on and the write succeeds; else dropped.
    if (spill_ != nullptr && SpillLocked(id, sessions_.at(id)).ok()) continue;
    RemoveLocked(id, GoneReason::kEvicted);
  }
  return true;
}

absl::StatusOr<SessionStore::Record*> SessionStore::FindLocked(
    const std::string& id, const std::string& caller) {
  const auto it = sessions_.find(id);
  if (it == sessions_.end()) return AdoptLocked(id, caller);
  // Prefix-reuse entries are not sessions.
  if (it->second.hidden || !VisibleTo(it->second, caller)) {
    return NotFoundLocked(id);
  }
  return &it->second;
}

bool SessionStore::VisibleTo(const Record& record, const std::string& caller) {
  return caller.empty() || record.owner.empty() || record.owner == caller;
}

absl::StatusOr<SessionInfo> SessionStore::Create(NewSession session) {
  if (!session.session_id.empty() && !session.hidden) {
    if (absl::Status status = CheckId(session.session_id, "session_id");
        !status.ok()) {
      return status;
    }
  }
  if (session.ttl < absl::ZeroDuration() || session.ttl > options_.max_ttl) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ttl_seconds must be in [0, %d] (0 = the default, --session-ttl), "
        "got %d",
        absl::ToInt64Seconds(options_.max_ttl),
        absl::ToInt64Seconds(session.ttl)));
  }
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  if (absl::Status status = CheckNotDrainingLocked(
          session.session_id, "no new session, fork or import");
      !status.ok()) {
    return status;
  }
  ExpireLocked(now);
  if (session.session_id.empty()) {
    do {
      session.session_id = MakeId();
    } while (sessions_.contains(session.session_id));
  } else if (!session.hidden && spill_ != nullptr &&
             !sessions_.contains(session.session_id) &&
             spill_->Exists(session.session_id)) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "session \"%s\" already exists (in --session-dir)",
        session.session_id));
  } else if (sessions_.contains(session.session_id)) {
    if (!session.hidden) {
      return absl::AlreadyExistsError(
          absl::StrFormat("session \"%s\" already exists", session.session_id));
    }
    // A newer state of the same tokens replaces it.
    RemoveLocked(session.session_id, GoneReason::kEvicted);
  }
  if (!session.hidden && !session.owner.empty() && session.counted &&
      options_.max_sessions_per_owner > 0) {
    const auto held = owner_sessions_.find(session.owner);
    if (held != owner_sessions_.end() &&
        held->second >= options_.max_sessions_per_owner) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "this API key holds %d sessions on this server, the most "
          "--max-sessions-per-key=%d allows; close one (or let one expire)",
          held->second, options_.max_sessions_per_owner));
    }
  }
  if (!MakeRoomLocked(/*entries_only=*/session.hidden)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the session memory budget is full: %d sessions of %d bytes each, "
        "all pinned or busy (--session-memory-bytes=%d); close some",
        sessions_.size(), options_.bytes_per_state, options_.memory_bytes));
  }
  Record record;
  record.snapshot = std::move(session.snapshot);
  record.ttl =
      session.ttl == absl::ZeroDuration() ? options_.default_ttl : session.ttl;
  record.pinned = session.pinned;
  record.leased = session.leased;
  record.hidden = session.hidden;
  record.last_used = now;
  if (!session.hidden) {
    if (session.counted) {
      CountOwnerLocked(record, session.owner);
    } else {
      record.owner = session.owner;
    }
  }
  if (record.hidden) {
    ++prefix_lengths_[static_cast<size_t>(record.snapshot.token_count)];
  }
  gone_.erase(session.session_id);
  auto [it, inserted] =
      sessions_.emplace(session.session_id, std::move(record));
  return InfoLocked(it->first, it->second);
}

absl::StatusOr<SessionSnapshot> SessionStore::Begin(
    const std::string& session_id, const std::string& caller) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  ExpireLocked(now);
  absl::StatusOr<Record*> record = FindLocked(session_id, caller);
  if (!record.ok()) return record.status();
  if ((*record)->leased) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "session \"%s\" is busy: another request is running on it (one "
        "request at a time per session)",
        session_id));
  }
  if (absl::Status status = LoadLocked(session_id, **record); !status.ok()) {
    return status;
  }
  (*record)->leased = true;
  (*record)->last_used = now;
  return (*record)->snapshot;
}

absl::StatusOr<SessionInfo> SessionStore::Commit(const std::string& session_id,
                                                 SessionSnapshot next) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  absl::StatusOr<Record*> record = FindLocked(session_id);
  if (!record.ok()) return record.status();
  (*record)->snapshot = std::move(next);
  (*record)->leased = false;
  (*record)->last_used = now;
  const SessionInfo info = InfoLocked(session_id, **record);
  // Reported as it was committed (in a slot's place: host), then written
  // back when a guest.
  WriteBackGuestLocked(session_id, **record);
  return info;
}

void SessionStore::Abort(const std::string& session_id) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  absl::StatusOr<Record*> record = FindLocked(session_id);
  if (!record.ok()) return;
  (*record)->leased = false;
  (*record)->last_used = now;
  WriteBackGuestLocked(session_id, **record);
}

void SessionStore::Discard(const std::string& session_id) {
  absl::MutexLock lock(&mutex_);
  const auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  ForgetOwnerLocked(it->second);
  sessions_.erase(it);
}

void SessionStore::CountOwnerLocked(Record& record, const std::string& owner) {
  record.owner = owner;
  record.counted = !owner.empty();
  if (record.counted) ++owner_sessions_[owner];
}

void SessionStore::ForgetOwnerLocked(const Record& record) {
  if (!record.counted) return;
  const auto held = owner_sessions_.find(record.owner);
  if (held != owner_sessions_.end() && --held->second <= 0) {
    owner_sessions_.erase(held);
  }
}

std::vector<size_t> SessionStore::PrefixLengths() {
  absl::MutexLock lock(&mutex_);
  std::vector<size_t> lengths;
  lengths.reserve(prefix_lengths_.size());
  for (const auto& [length, count] : prefix_lengths_) lengths.push_back(length);
  std::sort(lengths.rbegin(), lengths.rend());
  return lengths;
}

std::optional<SessionSnapshot> SessionStore::FindPrefix(
    const std::vector<std::pair<size_t, std::string>>& candidates,
    std::span<const int32_t> prompt) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  for (const auto& [length, key] : candidates) {
    const auto it = sessions_.find(key);
    if (it == sessions_.end() || !it->second.hidden) continue;
    const SessionSnapshot& snapshot = it->second.snapshot;
    if (snapshot.tokens == nullptr || snapshot.tokens->size() != length ||
        length > prompt.size() ||
        !std::equal(snapshot.tokens->begin(), snapshot.tokens->end(),
                    prompt.begin())) {
      continue;  // a hash collision
    }
    it->second.last_used = now;
    return snapshot;
  }
  return std::nullopt;
}

absl::StatusOr<SessionSnapshot> SessionStore::Snapshot(
    const std::string& session_id, const std::string& caller) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  ExpireLocked(now);
  const auto held = sessions_.find(session_id);
  if (held == sessions_.end()) {
    Record scratch;
    absl::StatusOr<const Record*> read =
        ReadLocked(session_id, scratch, caller);
    if (!read.ok()) return read.status();
    return (*read)->snapshot;
  }
  absl::StatusOr<Record*> record = FindLocked(session_id, caller);
  if (!record.ok()) return record.status();
  if (absl::Status status = LoadLocked(session_id, **record); !status.ok()) {
    return status;
  }
  (*record)->last_used = now;
  return (*record)->snapshot;
}

absl::StatusOr<absl::Duration> SessionStore::Ttl(
    const std::string& session_id, const std::string& caller) {
  absl::MutexLock lock(&mutex_);
  Record scratch;
  absl::StatusOr<const Record*> record =
      ReadLocked(session_id, scratch, caller);
  if (!record.ok()) return record.status();
  return (*record)->ttl;
}

absl::StatusOr<SessionInfo> SessionStore::Get(const std::string& session_id,
                                              const std::string& caller) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  ExpireLocked(now);
  Record scratch;
  absl::StatusOr<const Record*> record =
      ReadLocked(session_id, scratch, caller);
  if (!record.ok()) return record.status();
  return InfoLocked(session_id, **record);
}

std::vector<SessionInfo> SessionStore::List(const std::string& caller) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  ExpireLocked(now);
  std::vector<SessionInfo> infos;
  infos.reserve(sessions_.size());
  for (const auto& [id, record] : sessions_) {
    if (!record.hidden && VisibleTo(record, caller)) {
      infos.push_back(InfoLocked(id, record));
    }
  }
  std::sort(infos.begin(), infos.end(),
            [](const SessionInfo& a, const SessionInfo& b) {
              return a.session_id < b.session_id;
            });
  return infos;
}

absl::Status SessionStore::Close(const std::string& session_id,
                                 const std::string& caller) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  ExpireLocked(now);
  absl::StatusOr<Record*> record = FindLocked(session_id, caller);
  if (!record.ok()) return record.status();
  if ((*record)->leased) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "session \"%s\" is busy: a request is running on it; close it when "
        "the request has ended",
        session_id));
  }
  RemoveLocked(session_id, GoneReason::kClosed);
  return absl::OkStatus();
}

SessionStoreStats SessionStore::Stats() {
  const absl::Time now = now_();
  absl::MutexLock lock(&mutex_);
  ExpireLocked(now);
  SessionStoreStats stats;
  for (const auto& [id, record] : sessions_) {
    if (record.hidden) {
      ++stats.prefix_entries;
      stats.prefix_bytes += record.snapshot.state_bytes();
    } else if (record.on_disk) {
      ++stats.sessions_disk;
      stats.state_bytes_disk += record.disk_bytes;
    } else if (record.leased) {
      ++stats.sessions_slot;
      stats.state_bytes_slot += record.snapshot.state_bytes();
    } else {
      ++stats.sessions_host;
      stats.state_bytes_host += record.snapshot.state_bytes();
    }
    if (record.pinned) ++stats.pinned;
  }
  stats.capacity = options_.memory_bytes / options_.bytes_per_state;
  stats.evictions_total = evictions_;
  stats.expiries_total = expiries_;
  stats.spills_total = spills_;
  stats.loads_total = loads_;
  stats.adoptions_total = adoptions_;
  return stats;
}

}  // namespace tvq::sessions
