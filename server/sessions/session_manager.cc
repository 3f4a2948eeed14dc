#include "server/sessions/session_manager.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/sessions/fingerprint.h"

namespace tvq::sessions {
namespace {

// How long the migration at drain waits for a request that still holds a
// session (after the scheduler's drain only a refused request or a last
// commit can, for microseconds); past it the session is reported lost.
constexpr absl::Duration kMigrationBusyWait = absl::Seconds(5);

// The store key of a prefix-reuse entry: starts with a byte no session id
// may hold, so clients can never name it; `owner`'s (the API key whose
// request left it: another key never resumes from it, nor learns from
// cached_tokens what that key asked).
std::string PrefixKey(const std::string& owner, uint64_t token_hash) {
  return absl::StrFormat("\x01prefix-%s-%016x", owner, token_hash);
}

// Keeps the code, prefixes the message with the session.
absl::Status InSession(const absl::Status& status, const std::string& id) {
  return absl::Status(status.code(), absl::StrFormat("session \"%s\": %s", id,
                                                     status.message()));
}

absl::Status NotSaved(const std::string& id, const absl::Status& why) {
  return absl::InternalError(absl::StrFormat(
      "session \"%s\": the request ran but its state could not be saved (%s); "
      "the session is unchanged",
      id, why.message()));
}

// What the scheduler handed a turn's StateReceiver: nothing yet, a saved
// state, or why it could not save one.
using SavedSlot = std::optional<absl::StatusOr<scheduler::SavedState>>;

// The session after a request fed `added` (and generated `generated`) and
// the scheduler saved `saved`; an error naming the session when it saved
// nothing or the state does not match the tokens (the caller then leaves
// the session as it was).
absl::StatusOr<SessionSnapshot> Advance(const std::string& id,
                                        const SessionSnapshot& base,
                                        const std::vector<int32_t>& added,
                                        const std::vector<int32_t>& generated,
                                        SavedSlot& saved_slot) {
  if (!saved_slot.has_value() || !saved_slot->ok()) {
    return NotSaved(id, saved_slot.has_value()
                            ? saved_slot->status()
                            : absl::InternalError("nothing was saved"));
  }
  scheduler::SavedState saved = **std::move(saved_slot);
  SessionSnapshot next;
  next.state = std::make_shared<const std::string>(std::move(saved.bytes));
  next.position = saved.position;
  next.pending_token = saved.pending_token;
  next.token_count = base.token_count + static_cast<int64_t>(added.size()) +
                     static_cast<int64_t>(generated.size());
  next.token_hash =
      ExtendTokenHash(ExtendTokenHash(base.token_hash, added), generated);
  if (next.token_count != next.position + (next.pending_token >= 0 ? 1 : 0)) {
    return absl::InternalError(absl::StrFormat(
        "session \"%s\": the saved state absorbed %d tokens, expected %d; the "
        "session is unchanged",
        id, next.position, next.token_count - 1));
  }
  return next;
}

}  // namespace

// ---------------------------------------------------------------- turns

// A generation on a session: passes everything on to the caller's sink, and
// commits the saved state just before the success reaches it.
class SessionManager::GenerationTurn final : public scheduler::TokenSink,
                                             public scheduler::StateReceiver {
 public:
  GenerationTurn(SessionStore& store, std::string id, SessionSnapshot base,
                 std::vector<int32_t> added,
                 std::shared_ptr<scheduler::TokenSink> inner)
      : store_(store),
        id_(std::move(id)),
        base_(std::move(base)),
        added_(std::move(added)),
        inner_(std::move(inner)) {}

  void OnStateSaved(absl::StatusOr<scheduler::SavedState> state) override {
    saved_ = std::move(state);
  }
  void OnTokens(scheduler::TokenUpdate update) override {
    generated_.insert(generated_.end(), update.token_ids.begin(),
                      update.token_ids.end());
    inner_->OnTokens(std::move(update));
  }
  void OnFinished(scheduler::TokenUpdate update,
                  const scheduler::Completion& completion) override {
    generated_.insert(generated_.end(), update.token_ids.begin(),
                      update.token_ids.end());
    scheduler::Completion reported = completion;
    reported.usage.cached_tokens = static_cast<int>(base_.position);
    if (completion.finish_reason == scheduler::FinishReason::kCancelled &&
        !saved_.has_value()) {
      // Cut short at a drain before its first token: the session stays as
      // it was. Cut after one or more tokens, the scheduler saved the state
      // up to the last token delivered, and the session advances to it.
      store_.Abort(id_);
      inner_->OnFinished(std::move(update), reported);
      return;
    }
    absl::StatusOr<SessionSnapshot> next =
        Advance(id_, base_, added_, generated_, saved_);
    if (!next.ok()) {
      store_.Abort(id_);
      inner_->OnFailed(next.status());
      return;
    }
    if (absl::StatusOr<SessionInfo> info = store_.Commit(id_, *std::move(next));
        !info.ok()) {
      inner_->OnFailed(info.status());
      return;
    }
    inner_->OnFinished(std::move(update), reported);
  }
  void OnFailed(const absl::Status& status) override {
    store_.Abort(id_);
    inner_->OnFailed(status);
  }

 private:
  SessionStore& store_;
  const std::string id_;
  const SessionSnapshot base_;
  const std::vector<int32_t> added_;
  const std::shared_ptr<scheduler::TokenSink> inner_;
  std::vector<int32_t> generated_;
  SavedSlot saved_;
};

class SessionManager::ScoreTurn final : public scheduler::ScoreSink,
                                        public scheduler::StateReceiver {
 public:
  ScoreTurn(SessionStore& store, std::string id, SessionSnapshot base,
            std::vector<int32_t> added,
            std::shared_ptr<scheduler::ScoreSink> inner)
      : store_(store),
        id_(std::move(id)),
        base_(std::move(base)),
        added_(std::move(added)),
        inner_(std::move(inner)) {}

  void OnStateSaved(absl::StatusOr<scheduler::SavedState> state) override {
    saved_ = std::move(state);
  }
  void OnScored(scheduler::ScoreResult result) override {
    absl::StatusOr<SessionSnapshot> next =
        Advance(id_, base_, added_, {}, saved_);
    if (!next.ok()) {
      store_.Abort(id_);
      inner_->OnFailed(next.status());
      return;
    }
    if (absl::StatusOr<SessionInfo> info = store_.Commit(id_, *std::move(next));
        !info.ok()) {
      inner_->OnFailed(info.status());
      return;
    }
    result.usage.cached_tokens = static_cast<int>(base_.position);
    inner_->OnScored(std::move(result));
  }
  void OnFailed(const absl::Status& status) override {
    store_.Abort(id_);
    inner_->OnFailed(status);
  }

 private:
  SessionStore& store_;
  const std::string id_;
  const SessionSnapshot base_;
  const std::vector<int32_t> added_;
  const std::shared_ptr<scheduler::ScoreSink> inner_;
  SavedSlot saved_;
};

class SessionManager::AppendTurn final : public scheduler::AppendSink,
                                         public scheduler::StateReceiver {
 public:
  AppendTurn(SessionStore& store, std::string id, SessionSnapshot base,
             std::vector<int32_t> added, InfoCallback done,
             bool discard_on_failure)
      : store_(store),
        id_(std::move(id)),
        base_(std::move(base)),
        added_(std::move(added)),
        done_(std::move(done)),
        discard_on_failure_(discard_on_failure) {}

  void OnStateSaved(absl::StatusOr<scheduler::SavedState> state) override {
    saved_ = std::move(state);
  }
  void OnAppended(scheduler::AppendResult /*result*/) override {
    absl::StatusOr<SessionSnapshot> next =
        Advance(id_, base_, added_, {}, saved_);
    if (!next.ok()) {
      OnFailed(next.status());
      return;
    }
    done_(store_.Commit(id_, *std::move(next)));
  }
  void OnFailed(const absl::Status& status) override {
    if (discard_on_failure_) {
      store_.Discard(id_);
    } else {
      store_.Abort(id_);
    }
    done_(status);
  }

 private:
  SessionStore& store_;
  const std::string id_;
  const SessionSnapshot base_;
  const std::vector<int32_t> added_;
  const InfoCallback done_;
  const bool discard_on_failure_;
  SavedSlot saved_;
};

// A generation with automatic prefix reuse: retains its final state under
// the hash of its tokens just before the success reaches the caller.
class SessionManager::PrefixTurn final : public scheduler::TokenSink,
                                         public scheduler::StateReceiver {
 public:
  PrefixTurn(SessionStore& store, std::string owner,
             std::vector<int32_t> prompt, int cached,
             std::shared_ptr<scheduler::TokenSink> inner)
      : store_(store),
        owner_(std::move(owner)),
        tokens_(std::move(prompt)),
        prompt_tokens_(static_cast<int>(tokens_.size())),
        cached_(cached),
        inner_(std::move(inner)) {}

  void OnStateSaved(absl::StatusOr<scheduler::SavedState> state) override {
    saved_ = std::move(state);
  }
  void OnTokens(scheduler::TokenUpdate update) override {
    tokens_.insert(tokens_.end(), update.token_ids.begin(),
                   update.token_ids.end());
    inner_->OnTokens(std::move(update));
  }
  void OnFinished(scheduler::TokenUpdate update,
                  const scheduler::Completion& completion) override {
    tokens_.insert(tokens_.end(), update.token_ids.begin(),
                   update.token_ids.end());
    if (saved_.has_value() && saved_->ok()) Retain(**std::move(saved_));
    scheduler::Completion reported = completion;
    reported.usage.prompt_tokens = prompt_tokens_;
    reported.usage.cached_tokens = cached_;
    inner_->OnFinished(std::move(update), reported);
  }
  void OnFailed(const absl::Status& status) override {
    inner_->OnFailed(status);
  }

 private:
  // Best effort: a state that does not fit (budget full of pinned or busy
  // sessions) is not retained.
  void Retain(scheduler::SavedState saved) {
    NewSession entry;
    entry.hidden = true;
    entry.snapshot.state =
        std::make_shared<const std::string>(std::move(saved.bytes));
    entry.snapshot.position = saved.position;
    entry.snapshot.pending_token = saved.pending_token;
    entry.snapshot.token_count = static_cast<int64_t>(tokens_.size());
    if (entry.snapshot.token_count !=
        entry.snapshot.position + (saved.pending_token >= 0 ? 1 : 0)) {
      return;
    }
    entry.snapshot.token_hash = ExtendTokenHash(kEmptyTokenHash, tokens_);
    entry.snapshot.tokens =
        std::make_shared<const std::vector<int32_t>>(tokens_);
    entry.session_id = PrefixKey(owner_, entry.snapshot.token_hash);
    store_.Create(std::move(entry)).IgnoreError();
  }

  SessionStore& store_;
  const std::string owner_;
  std::vector<int32_t> tokens_;
  const int prompt_tokens_;
  const int cached_;
  const std::shared_ptr<scheduler::TokenSink> inner_;
  SavedSlot saved_;
};

// ---------------------------------------------------------------- manager

SessionManager::SessionManager(scheduler::Scheduler& scheduler,
                               const runtime::StatePool& pool,
                               const BlobIdentity& identity, int32_t eos_id,
                               const SessionStoreOptions& options)
    : scheduler_(scheduler),
      pool_(pool),
      identity_(identity),
      eos_id_(eos_id),
      store_(options) {}

std::vector<int32_t> SessionManager::TurnInput(
    const SessionSnapshot& base, const std::vector<int32_t>& tokens,
    bool no_eos_prefix, std::vector<int32_t>* added) const {
  added->clear();
  if (base.token_count == 0 && !no_eos_prefix) added->push_back(eos_id_);
  added->insert(added->end(), tokens.begin(), tokens.end());
  std::vector<int32_t> input;
  input.reserve(added->size() + 1);
  if (base.pending_token >= 0) input.push_back(base.pending_token);
  input.insert(input.end(), added->begin(), added->end());
  return input;
}

void SessionManager::Create(CreateParams params, InfoCallback done) {
  NewSession session;
  session.session_id = std::move(params.session_id);
  session.ttl = params.ttl;
  session.pinned = params.pinned;
  session.owner = params.owner;
  session.counted = params.counted;
  session.snapshot.token_hash = kEmptyTokenHash;
  session.leased = !params.prompt.empty();
  // With reuse: the prompt as the session will hold it (eos prefix
  // included), and the retained state it may start from.
  std::vector<int32_t> prompt = std::move(params.prompt);
  bool no_eos_prefix = params.no_eos_prefix;
  int64_t cached = 0;
  if (params.reuse_prefix && !prompt.empty()) {
    if (!no_eos_prefix) prompt.insert(prompt.begin(), eos_id_);
    no_eos_prefix = true;
    if (std::optional<SessionSnapshot> hit =
            FindRetainedPrefix(prompt, params.owner);
        hit.has_value()) {
      cached = hit->position;
      prompt.erase(prompt.begin(), prompt.begin() + hit->token_count);
      session.snapshot = *std::move(hit);
      // The entry's token list is for verifying matches; a session keeps
      // only its hash.
      session.snapshot.tokens = nullptr;
    }
  }
  const SessionSnapshot base = session.snapshot;
  absl::StatusOr<SessionInfo> created = store_.Create(std::move(session));
  if (!created.ok() || (prompt.empty() && base.pending_token < 0)) {
    done(std::move(created));
    return;
  }
  if (cached > 0) {
    done = [done = std::move(done),
            cached](absl::StatusOr<SessionInfo> info) {
      if (info.ok()) info->cached_tokens = cached;
      done(std::move(info));
    };
  }
  std::vector<int32_t> added;
  std::vector<int32_t> feed = TurnInput(base, prompt, no_eos_prefix, &added);
  RunAppend(created->session_id, base, std::move(feed), std::move(added),
            std::move(params.request_id), params.deadline, params.frontend,
            std::move(done), /*discard_on_failure=*/true);
}

void SessionManager::Append(AppendParams params, InfoCallback done) {
  if (params.tokens.empty()) {
    done(absl::InvalidArgumentError(
        "a prompt is required: set text or token_ids"));
    return;
  }
  absl::StatusOr<SessionSnapshot> base =
      store_.Begin(params.session_id, params.caller);
  if (!base.ok()) {
    done(base.status());
    return;
  }
  std::vector<int32_t> added;
  std::vector<int32_t> feed =
      TurnInput(*base, params.tokens, params.no_eos_prefix, &added);
  RunAppend(params.session_id, *base, std::move(feed), std::move(added),
            std::move(params.request_id), params.deadline, params.frontend,
            std::move(done), /*discard_on_failure=*/false);
}

void SessionManager::RunAppend(const std::string& session_id,
                               const SessionSnapshot& base,
                               std::vector<int32_t> feed,
                               std::vector<int32_t> added,
                               std::string request_id, absl::Time deadline,
                               scheduler::Frontend frontend, InfoCallback done,
                               bool discard_on_failure) {
  if (feed.size() == 1) {
    // Nothing to feed yet: the one token becomes the pending one.
    SessionSnapshot next = base;
    next.pending_token = feed[0];
    next.token_count = base.token_count + static_cast<int64_t>(added.size());
    next.token_hash = ExtendTokenHash(base.token_hash, added);
    done(store_.Commit(session_id, std::move(next)));
    return;
  }
  auto turn =
      std::make_shared<AppendTurn>(store_, session_id, base, std::move(added),
                                   std::move(done), discard_on_failure);
  scheduler::AppendRequest request;
  request.request_id = request_id.empty()
                           ? absl::StrFormat("append-%s", session_id)
                           : std::move(request_id);
  request.pending_token = feed.back();
  feed.pop_back();
  request.tokens = std::move(feed);
  request.deadline = deadline;
  request.frontend = frontend;
  request.start_from.mode = scheduler::StartFrom::Mode::kImport;
  request.start_from.saved = base.state;
  request.keep.save_to = turn;
  absl::StatusOr<scheduler::RequestHandle> handle =
      scheduler_.SubmitAppend(std::move(request), turn);
  if (!handle.ok()) turn->OnFailed(InSession(handle.status(), session_id));
}

absl::StatusOr<scheduler::RequestHandle> SessionManager::SubmitGeneration(
    const std::string& session_id, bool no_eos_prefix,
    scheduler::GenerationRequest request,
    std::shared_ptr<scheduler::TokenSink> sink, const std::string& caller) {
  absl::StatusOr<SessionSnapshot> base = store_.Begin(session_id, caller);
  if (!base.ok()) return base.status();
  std::vector<int32_t> added;
  request.prompt = TurnInput(*base, request.prompt, no_eos_prefix, &added);
  if (request.prompt.empty()) {
    store_.Abort(session_id);
    return absl::InvalidArgumentError(absl::StrFormat(
        "session \"%s\" holds no token and the prompt is empty: there is "
        "nothing to generate from (set text or token_ids)",
        session_id));
  }
  auto turn = std::make_shared<GenerationTurn>(
      store_, session_id, *base, std::move(added), std::move(sink));
  request.start_from = scheduler::StartFrom{};
  request.start_from.mode = scheduler::StartFrom::Mode::kImport;
  request.start_from.saved = base->state;
  request.keep = scheduler::KeepState{};
  request.keep.save_to = turn;
  absl::StatusOr<scheduler::RequestHandle> handle =
      scheduler_.SubmitGeneration(std::move(request), turn);
  if (!handle.ok()) {
    store_.Abort(session_id);
    return InSession(handle.status(), session_id);
  }
  return handle;
}

std::optional<SessionSnapshot> SessionManager::FindRetainedPrefix(
    std::span<const int32_t> prompt, const std::string& owner) {
  if (!prefix_reuse_.load(std::memory_order_relaxed) || prompt.empty()) {
    return std::nullopt;
  }
  // The prefixes as long as a retained entry (2 tokens or more), longest
  // first: one pass of the hash, one key per entry length.
  const std::vector<size_t> lengths = store_.PrefixLengths();  // descending
  std::vector<std::pair<size_t, std::string>> candidates;
  uint64_t hash = kEmptyTokenHash;
  size_t hashed = 0;
  for (auto length = lengths.rbegin(); length != lengths.rend(); ++length) {
    if (*length < 2 || *length > prompt.size()) continue;
    hash = ExtendTokenHash(hash, prompt.subspan(hashed, *length - hashed));
    hashed = *length;
    candidates.emplace_back(*length, PrefixKey(owner, hash));
  }
  std::reverse(candidates.begin(), candidates.end());
  prefix_queries_.fetch_add(1, std::memory_order_relaxed);
  std::optional<SessionSnapshot> hit = store_.FindPrefix(candidates, prompt);
  if (!hit.has_value() || hit->pending_token < 0 ||
      hit->pending_token != prompt[hit->token_count - 1]) {
    return std::nullopt;
  }
  prefix_hits_.fetch_add(1, std::memory_order_relaxed);
  prefix_cached_tokens_.fetch_add(hit->position, std::memory_order_relaxed);
  return hit;
}

absl::StatusOr<scheduler::RequestHandle>
SessionManager::SubmitGenerationReusing(
    scheduler::GenerationRequest request,
    std::shared_ptr<scheduler::TokenSink> sink, const std::string& caller) {
  if (!prefix_reuse_.load(std::memory_order_relaxed) ||
      request.start_from.mode != scheduler::StartFrom::Mode::kEmpty ||
      request.prompt.empty()) {
    return scheduler_.SubmitGeneration(std::move(request), std::move(sink));
  }
  const std::vector<int32_t>& prompt = request.prompt;
  const std::optional<SessionSnapshot> hit =
      FindRetainedPrefix(prompt, caller);
  int cached = 0;
  std::vector<int32_t> full_prompt = prompt;
  if (hit.has_value()) {
    cached = static_cast<int>(hit->position);
    // Feed the entry's pending token and what follows it.
    request.prompt.erase(request.prompt.begin(),
                         request.prompt.begin() + hit->position);
    request.start_from.mode = scheduler::StartFrom::Mode::kImport;
    request.start_from.saved = hit->state;
  }
  auto turn = std::make_shared<PrefixTurn>(
      store_, caller, std::move(full_prompt), cached, std::move(sink));
  request.keep.save_to = turn;
  return scheduler_.SubmitGeneration(std::move(request), turn);
}

absl::StatusOr<scheduler::RequestHandle> SessionManager::SubmitScore(
    const std::string& session_id, bool no_eos_prefix,
    scheduler::ScoreRequest request,
    std::shared_ptr<scheduler::ScoreSink> sink, const std::string& caller) {
  absl::StatusOr<SessionSnapshot> base = store_.Begin(session_id, caller);
  if (!base.ok()) return base.status();
  std::vector<int32_t> added;
  request.tokens = TurnInput(*base, request.tokens, no_eos_prefix, &added);
  if (request.tokens.size() < 2) {
    store_.Abort(session_id);
    return absl::InvalidArgumentError(absl::StrFormat(
        "session \"%s\": the scored sequence (the session's pending token and "
        "the new tokens) must have at least 2 tokens, got %d",
        session_id, request.tokens.size()));
  }
  auto turn = std::make_shared<ScoreTurn>(store_, session_id, *base,
                                          std::move(added), std::move(sink));
  request.hold_last_token = true;
  request.start_from = scheduler::StartFrom{};
  request.start_from.mode = scheduler::StartFrom::Mode::kImport;
  request.start_from.saved = base->state;
  request.keep = scheduler::KeepState{};
  request.keep.save_to = turn;
  absl::StatusOr<scheduler::RequestHandle> handle =
      scheduler_.SubmitScore(std::move(request), turn);
  if (!handle.ok()) {
    store_.Abort(session_id);
    return InSession(handle.status(), session_id);
  }
  return handle;
}

absl::StatusOr<SessionInfo> SessionManager::Fork(
    const std::string& session_id, const std::string& new_session_id,
    const std::string& caller, bool counted) {
  absl::StatusOr<SessionSnapshot> snapshot =
      store_.Snapshot(session_id, caller);
  if (!snapshot.ok()) return snapshot.status();
  absl::StatusOr<absl::Duration> ttl = store_.Ttl(session_id, caller);
  if (!ttl.ok()) return ttl.status();
  NewSession fork;
  fork.session_id = new_session_id;
  fork.ttl = *ttl;
  fork.owner = caller;
  fork.counted = counted;
  fork.snapshot = *std::move(snapshot);
  return store_.Create(std::move(fork));
}

absl::StatusOr<std::string> SessionManager::Export(
    const std::string& session_id, const std::string& caller) {
  absl::StatusOr<SessionSnapshot> snapshot =
      store_.Snapshot(session_id, caller);
  if (!snapshot.ok()) return snapshot.status();
  std::string blob = EncodeSessionBlob(*snapshot, identity_);
  exports_.fetch_add(1, std::memory_order_relaxed);
  export_bytes_.fetch_add(blob.size(), std::memory_order_relaxed);
  return blob;
}

absl::StatusOr<SessionInfo> SessionManager::Import(
    std::string_view blob, const std::string& session_id, absl::Duration ttl,
    bool pinned, const std::string& owner) {
  absl::StatusOr<SessionSnapshot> snapshot = DecodeSessionBlob(blob, identity_);
  if (snapshot.ok() && snapshot->state != nullptr) {
    if (absl::Status status = pool_.ValidateExport(*snapshot->state);
        !status.ok()) {
      snapshot = absl::InvalidArgumentError(
          absl::StrFormat("session blob: %s", status.message()));
    } else if (const int64_t position =
                   runtime::StatePool::ExportedPosition(*snapshot->state);
               position != snapshot->position) {
      snapshot = absl::InvalidArgumentError(absl::StrFormat(
          "session blob: the header says position %d, its state has absorbed "
          "%d tokens",
          snapshot->position, position));
    }
  }
  if (!snapshot.ok()) {
    import_failures_.fetch_add(1, std::memory_order_relaxed);
    return snapshot.status();
  }
  NewSession session;
  session.session_id = session_id;
  session.snapshot = *std::move(snapshot);
  session.ttl = ttl;
  session.pinned = pinned;
  session.owner = owner;
  absl::StatusOr<SessionInfo> info = store_.Create(std::move(session));
  if (!info.ok()) {
    import_failures_.fetch_add(1, std::memory_order_relaxed);
    return info.status();
  }
  imports_.fetch_add(1, std::memory_order_relaxed);
  import_bytes_.fetch_add(blob.size(), std::memory_order_relaxed);
  return info;
}

absl::StatusOr<std::vector<std::string>> SessionManager::OpenDisk(
    const std::string& directory) {
  absl::StatusOr<std::unique_ptr<SessionDisk>> disk =
      SessionDisk::Open(directory, identity_, pool_);
  if (!disk.ok()) return disk.status();
  SessionDisk::ScanResult scan = (*disk)->Scan();
  for (SpilledSession& session : scan.sessions) {
    const std::string id = session.session_id;
    if (absl::Status status = store_.AddSpilled(std::move(session));
        !status.ok()) {
      scan.problems.push_back(
          absl::StrFormat("session \"%s\" skipped: %s", id, status.message()));
    }
  }
  disk_ = *std::move(disk);
  store_.SetSpill(disk_.get());
  return scan.problems;
}

absl::StatusOr<SessionInfo> SessionManager::Get(const std::string& session_id,
                                                const std::string& caller) {
  return store_.Get(session_id, caller);
}

std::vector<SessionInfo> SessionManager::List(const std::string& caller) {
  return store_.List(caller);
}

absl::Status SessionManager::Close(const std::string& session_id,
                                   const std::string& caller) {
  return store_.Close(session_id, caller);
}

MigrationReport SessionManager::Migrate(SessionPeer* peer) {
  const absl::Time start = absl::Now();
  MigrationReport report;
  bool peer_reachable = peer != nullptr;
  const bool has_disk = disk_ != nullptr;
  // Nothing enters memory from here on (a session adopted or imported after
  // the listing would be lost at exit).
  store_.BeginDrain();
  const std::vector<std::string> ids = store_.InMemory();
  if (peer == nullptr && !has_disk) {
    report.lost = static_cast<int>(ids.size());
    if (report.lost > 0) {
      report.problems.push_back(absl::StrFormat(
          "%d sessions held in memory are lost when the server exits: neither "
          "--drain-peer nor --session-dir is set",
          report.lost));
    }
    report.elapsed = absl::Now() - start;
    return report;
  }
  for (const std::string& id : ids) {
    // The scheduler has drained: a lease still held is brief (a request
    // refused at the drain, a last commit), and is waited for.
    absl::StatusOr<SpilledSession> session =
        store_.BeginMigration(id, kMigrationBusyWait);
    if (absl::IsUnavailable(session.status())) {
      ++report.lost;
      report.problems.push_back(absl::StrFormat(
          "%s: lost when the server exits", session.status().message()));
      continue;
    }
    if (!session.ok()) continue;  // closed meanwhile
    if (peer_reachable) {
      const std::string blob = EncodeSessionBlob(session->snapshot, identity_);
      const absl::Status pushed =
          peer->Import(id, blob, session->ttl, session->pinned, session->owner);
      if (pushed.ok()) {
        store_.FinishMigration(id);
        ++report.to_peer;
        report.peer_bytes += static_cast<int64_t>(blob.size());
        migrations_peer_.fetch_add(1, std::memory_order_relaxed);
        migration_bytes_peer_.fetch_add(blob.size(), std::memory_order_relaxed);
        continue;
      }
      ++report.peer_failures;
      migration_failures_peer_.fetch_add(1, std::memory_order_relaxed);
      report.problems.push_back(absl::StrFormat(
          "session \"%s\": pushing it to --drain-peer=%s failed (%s)%s", id,
          peer->Describe(), pushed.ToString(),
          has_disk ? "; saving it to --session-dir" : ""));
      if (absl::IsUnavailable(pushed) || absl::IsDeadlineExceeded(pushed)) {
        peer_reachable = false;
        report.problems.push_back(absl::StrFormat(
            "--drain-peer=%s is unreachable: the remaining sessions go %s",
            peer->Describe(), has_disk ? "to --session-dir" : "nowhere"));
      }
    }
    absl::StatusOr<int64_t> written = store_.AbortMigration(id, has_disk);
    if (has_disk && written.ok()) {
      ++report.to_disk;
      report.disk_bytes += *written;
      migrations_disk_.fetch_add(1, std::memory_order_relaxed);
      migration_bytes_disk_.fetch_add(static_cast<uint64_t>(*written),
                                      std::memory_order_relaxed);
      continue;
    }
    ++report.lost;
    if (has_disk) {
      migration_failures_disk_.fetch_add(1, std::memory_order_relaxed);
      report.problems.push_back(
          absl::StrFormat("session \"%s\": saving it to --session-dir failed "
                          "(%s): lost when the server exits",
                          id, written.status().ToString()));
    } else {
      report.problems.push_back(absl::StrFormat(
          "session \"%s\": not migrated (the peer did not take it and there "
          "is no --session-dir): lost when the server exits",
          id));
    }
  }
  report.elapsed = absl::Now() - start;
  return report;
}

SessionTransferStats SessionManager::TransferStats() const {
  SessionTransferStats stats;
  stats.exports_total = exports_.load(std::memory_order_relaxed);
  stats.export_bytes_total = export_bytes_.load(std::memory_order_relaxed);
  stats.imports_total = imports_.load(std::memory_order_relaxed);
  stats.import_bytes_total = import_bytes_.load(std::memory_order_relaxed);
  stats.import_failures_total =
      import_failures_.load(std::memory_order_relaxed);
  stats.prefix_queries_total = prefix_queries_.load(std::memory_order_relaxed);
  stats.prefix_hits_total = prefix_hits_.load(std::memory_order_relaxed);
  stats.prefix_cached_tokens_total =
      prefix_cached_tokens_.load(std::memory_order_relaxed);
  stats.migrations_peer_total = migrations_peer_.load(std::memory_order_relaxed);
  stats.migrations_disk_total = migrations_disk_.load(std::memory_order_relaxed);
  stats.migration_bytes_peer_total =
      migration_bytes_peer_.load(std::memory_order_relaxed);
  stats.migration_bytes_disk_total =
      migration_bytes_disk_.load(std::memory_order_relaxed);
  stats.migration_failures_peer_total =
      migration_failures_peer_.load(std::memory_order_relaxed);
  stats.migration_failures_disk_total =
      migration_failures_disk_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace tvq::sessions
