// SessionStore with an injected clock: budget and LRU eviction (pinned and
// busy sessions never go), TTL expiry, one lease at a time, commit / abort,
// why a session is gone, id rules.
#include "server/sessions/session_store.h"

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tvq::sessions {
namespace {

class SessionStoreTest : public ::testing::Test {
 protected:
  SessionStoreTest() {
    options_.memory_bytes = 3 * 100;
    options_.bytes_per_state = 100;
    options_.default_ttl = absl::Seconds(60);
    options_.max_ttl = absl::Hours(1);
    store_ = std::make_unique<SessionStore>(options_, [this] { return now_; });
  }
  absl::StatusOr<SessionInfo> Create(
      const std::string& id, bool pinned = false,
      absl::Duration ttl = absl::ZeroDuration()) {
    NewSession session;
    session.session_id = id;
    session.pinned = pinned;
    session.ttl = ttl;
    return store_->Create(std::move(session));
  }
  void Tick() { now_ += absl::Seconds(1); }

  SessionStoreOptions options_;
  absl::Time now_ = absl::FromUnixSeconds(1000000);
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTest, EvictsLeastRecentlyUsedUnpinnedIdleSessions) {
  ASSERT_TRUE(Create("pinned", true).ok());
  Tick();
  ASSERT_TRUE(Create("a").ok());
  Tick();
  ASSERT_TRUE(Create("b").ok());
  Tick();
  ASSERT_TRUE(store_->Begin("a").ok());  // a is newer than b, and busy
  Tick();
  ASSERT_TRUE(Create("c").ok());  // evicts b
  const absl::Status gone = store_->Get("b").status();
  EXPECT_EQ(gone.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.message().find("evicted"), std::string::npos) << gone;
  // a is busy, pinned is pinned: c is the only one that can go.
  Tick();
  ASSERT_TRUE(Create("d").ok());
  EXPECT_FALSE(store_->Get("c").ok());
  EXPECT_TRUE(store_->Get("a").ok());
  EXPECT_TRUE(store_->Get("pinned").ok());
  // With d busy too, nothing can go.
  ASSERT_TRUE(store_->Begin("d").ok());
  const absl::Status full = Create("e").status();
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("--session-memory-bytes=300"),
            std::string::npos);
  EXPECT_EQ(store_->Stats().evictions_total, 2u);
  EXPECT_EQ(store_->Stats().capacity, 3);
}

TEST_F(SessionStoreTest, IdleUnpinnedSessionsExpire) {
  ASSERT_TRUE(Create("short", false, absl::Seconds(5)).ok());
  ASSERT_TRUE(Create("default").ok());
  ASSERT_TRUE(Create("pinned", true, absl::Seconds(5)).ok());
  absl::StatusOr<SessionInfo> info = store_->Get("short");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->expires_at, now_ + absl::Seconds(5));
  EXPECT_EQ(store_->Get("pinned")->expires_at, absl::InfiniteFuture());
  now_ += absl::Seconds(5);
  const absl::Status expired = store_->Get("short").status();
  EXPECT_EQ(expired.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(expired.message().find("expired"), std::string::npos) << expired;
  EXPECT_TRUE(store_->Get("default").ok());
  // A leased session never expires while its request runs.
  ASSERT_TRUE(store_->Begin("default").ok());
  now_ += absl::Hours(2);
  EXPECT_TRUE(store_->Get("default").ok());
  store_->Abort("default");
  EXPECT_TRUE(store_->Get("default").ok());  // the lease end was a use
  now_ += absl::Seconds(60);
  EXPECT_FALSE(store_->Get("default").ok());
  EXPECT_TRUE(store_->Get("pinned").ok());
  EXPECT_EQ(store_->Stats().expiries_total, 2u);
}

TEST_F(SessionStoreTest, OneLeaseAtATimeCommitAndAbort) {
  ASSERT_TRUE(Create("s").ok());
  absl::StatusOr<SessionSnapshot> base = store_->Begin("s");
  ASSERT_TRUE(base.ok());
  const absl::Status busy = store_->Begin("s").status();
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(busy.message().find("\"s\""), std::string::npos);
  EXPECT_EQ(store_->Close("s").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Get("s")->tier, SessionTier::kSlot);
  store_->Abort("s");
  EXPECT_EQ(store_->Get("s")->position, 0);
  ASSERT_TRUE(store_->Begin("s").ok());
  SessionSnapshot next;
  next.state = std::make_shared<const std::string>(100, 'x');
  next.position = 4;
  next.token_count = 5;
  next.pending_token = 9;
  absl::StatusOr<SessionInfo> committed = store_->Commit("s", next);
  ASSERT_TRUE(committed.ok());
  EXPECT_EQ(committed->position, 5);
  EXPECT_EQ(committed->state_bytes, 100);
  EXPECT_EQ(committed->tier, SessionTier::kHost);
  EXPECT_EQ(store_->Snapshot("s")->pending_token, 9);
  EXPECT_TRUE(store_->Close("s").ok());
  EXPECT_NE(store_->Get("s").status().message().find("closed"),
            std::string::npos);
}

TEST_F(SessionStoreTest, IdsAndTtlsAreChecked) {
  EXPECT_EQ(Create("has space").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Create(std::string(129, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Create("tab\t").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<SessionInfo> made = Create("");
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->session_id.rfind("sess-", 0), 0u);
  EXPECT_EQ(made->session_id.size(), 5u + 16u);
  ASSERT_TRUE(Create("x").ok());
  EXPECT_EQ(Create("x").status().code(), absl::StatusCode::kAlreadyExists);
  const absl::Status long_ttl = Create("y", false, absl::Hours(2)).status();
  EXPECT_EQ(long_ttl.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(long_ttl.message().find("ttl_seconds"), std::string::npos);
  EXPECT_EQ(store_->List().size(), 2u);
}

TEST_F(SessionStoreTest, PrefixEntriesGoFirstAndNeverEvictSessions) {
  auto entry = [this](const std::string& key, std::vector<int32_t> tokens) {
    NewSession session;
    session.session_id = key;
    session.hidden = true;
    session.snapshot.token_count = static_cast<int64_t>(tokens.size());
    session.snapshot.tokens =
        std::make_shared<const std::vector<int32_t>>(std::move(tokens));
    return store_->Create(std::move(session));
  };
  ASSERT_TRUE(Create("s1").ok());
  Tick();
  ASSERT_TRUE(entry("\x01"
                    "e1",
                    {1, 2, 3})
                  .ok());
  Tick();
  ASSERT_TRUE(entry("\x01"
                    "e2",
                    {1, 2, 3, 4, 5})
                  .ok());
  EXPECT_EQ(store_->List().size(), 1u);  // entries are not listed
  EXPECT_EQ(store_
                ->Get("\x01"
                      "e1")
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->PrefixLengths(), (std::vector<size_t>{5, 3}));
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6};
  std::optional<SessionSnapshot> hit = store_->FindPrefix({{5,
                                                            "\x01"
                                                            "e2"},
                                                           {3,
                                                            "\x01"
                                                            "e1"}},
                                                          prompt);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->token_count, 5);
  // A key whose tokens differ (a hash collision) never matches.
  EXPECT_FALSE(store_
                   ->FindPrefix({{3,
                                  "\x01"
                                  "e1"}},
                                std::vector<int32_t>{1, 2, 9})
                   .has_value());
  // The budget (3) is full: a new session evicts the least recently used
  // entry (e1; e2 was just used), not the session.
  Tick();
  ASSERT_TRUE(Create("s2").ok());
  EXPECT_EQ(store_->PrefixLengths(), (std::vector<size_t>{5}));
  ASSERT_TRUE(Create("s3").ok());  // evicts e2
  EXPECT_TRUE(store_->PrefixLengths().empty());
  // Full of sessions: an entry is not kept, and no session goes.
  EXPECT_EQ(entry("\x01"
                  "e3",
                  {1, 2})
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->List().size(), 3u);
  EXPECT_EQ(store_->Stats().evictions_total, 0u);  // entries do not count
}

// From BeginDrain (a migration at drain has started) nothing new enters
// memory: it would be lost at exit. The sessions held stay readable,
// listable and closable, and the migration still lists them.
TEST_F(SessionStoreTest, ADrainingStoreTakesNoNewSession) {
  ASSERT_TRUE(Create("kept").ok());
  store_->BeginDrain();
  const absl::Status refused = Create("late").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_NE(refused.message().find("\"late\": this server is draining"),
            std::string::npos)
      << refused;
  EXPECT_EQ(Create("").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(store_->Get("kept").ok());
  EXPECT_EQ(store_->InMemory(), std::vector<std::string>{"kept"});
  EXPECT_EQ(store_->Get("late").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->Close("kept").ok());
}

// The migration lists the sessions a request holds too, and waits for the
// request to end instead of skipping them (a skipped one would be lost at
// exit); one still held after the wait is UNAVAILABLE naming it.
TEST_F(SessionStoreTest, AMigrationWaitsForTheRequestThatHoldsASession) {
  ASSERT_TRUE(Create("busy").ok());
  ASSERT_TRUE(Create("idle").ok());
  absl::StatusOr<SessionSnapshot> base = store_->Begin("busy");
  ASSERT_TRUE(base.ok());
  store_->BeginDrain();
  EXPECT_EQ(store_->InMemory(), (std::vector<std::string>{"busy", "idle"}));

  const absl::Status still = store_->BeginMigration("busy", absl::Milliseconds(
                                                                20))
                                 .status();
  EXPECT_EQ(still.code(), absl::StatusCode::kUnavailable) << still;
  EXPECT_NE(still.message().find("\"busy\" was still busy"),
            std::string::npos)
      << still;

  // The request commits while the migration waits: the migration gets the
  // committed state.
  SessionSnapshot next = *base;
  next.token_count = 7;
  std::thread request([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(store_->Commit("busy", next).ok());
  });
  absl::StatusOr<SpilledSession> moved =
      store_->BeginMigration("busy", absl::Seconds(60));
  request.join();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->snapshot.token_count, 7);
  store_->FinishMigration("busy");
  EXPECT_TRUE(store_->BeginMigration("idle", absl::ZeroDuration()).ok());
  EXPECT_EQ(store_->BeginMigration("gone", absl::ZeroDuration())
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

// max_sessions_per_owner counts the sessions each owner holds: a new one
// past it is RESOURCE_EXHAUSTED naming the flag; other owners and sessions
// without an owner are not affected; any way a session goes (closed,
// expired, discarded, migrated) makes room again.
TEST_F(SessionStoreTest, EachOwnerHoldsAtMostItsLimit) {
  options_.memory_bytes = 10 * 100;
  options_.max_sessions_per_owner = 2;
  store_ = std::make_unique<SessionStore>(options_, [this] { return now_; });
  auto create = [&](const std::string& id, const std::string& owner,
                    bool pinned = false) {
    NewSession session;
    session.session_id = id;
    session.owner = owner;
    session.pinned = pinned;
    session.ttl = absl::Seconds(10);
    return store_->Create(std::move(session)).status();
  };
  ASSERT_TRUE(create("a1", "key-a").ok());
  ASSERT_TRUE(create("a2", "key-a", /*pinned=*/true).ok());
  const absl::Status over = create("a3", "key-a");
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_NE(over.message().find("this API key holds 2 sessions on this "
                                "server, the most --max-sessions-per-key=2 "
                                "allows"),
            std::string::npos)
      << over;
  EXPECT_TRUE(create("b1", "key-b").ok());
  EXPECT_TRUE(create("anonymous-1", "").ok());
  EXPECT_TRUE(create("anonymous-2", "").ok());
  EXPECT_TRUE(create("anonymous-3", "").ok());
  // Closed: room for one.
  ASSERT_TRUE(store_->Close("a2").ok());
  EXPECT_TRUE(create("a3", "key-a").ok());
  EXPECT_FALSE(create("a4", "key-a").ok());
  // Expired (a1 and a3 are idle and unpinned): room for two.
  now_ += absl::Seconds(11);
  EXPECT_TRUE(create("a4", "key-a").ok());
  EXPECT_TRUE(create("a5", "key-a").ok());
  EXPECT_FALSE(create("a6", "key-a").ok());
  // Discarded (a CreateSession whose prompt failed never existed).
  store_->Discard("a5");
  EXPECT_TRUE(create("a6", "key-a").ok());
  // Migrated away.
  ASSERT_TRUE(store_->BeginMigration("a6", absl::ZeroDuration()).ok());
  store_->FinishMigration("a6");
  EXPECT_TRUE(create("a7", "key-a").ok());
  EXPECT_FALSE(create("a8", "key-a").ok());
}

TEST_F(SessionStoreTest, SessionsAreVisibleOnlyToTheirOwner) {
  auto create = [&](const std::string& id, const std::string& owner) {
    NewSession session;
    session.session_id = id;
    session.owner = owner;
    return store_->Create(std::move(session)).status();
  };
  ASSERT_TRUE(create("mine", "key-a").ok());
  ASSERT_TRUE(create("everyones", "").ok());
  const std::string unknown =
      std::string(store_->Get("nothing", "key-b").status().message());
  const auto expect_unknown = [&](const absl::Status& status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
    std::string expected = unknown;
    expected.replace(expected.find("nothing"), 7, "mine");
    EXPECT_EQ(status.message(), expected);
  };
  expect_unknown(store_->Get("mine", "key-b").status());
  expect_unknown(store_->Begin("mine", "key-b").status());
  expect_unknown(store_->Snapshot("mine", "key-b").status());
  expect_unknown(store_->Ttl("mine", "key-b").status());
  expect_unknown(store_->Close("mine", "key-b"));
  // The id stays taken.
  EXPECT_EQ(create("mine", "key-b").code(), absl::StatusCode::kAlreadyExists);
  std::vector<std::string> listed;
  for (const SessionInfo& info : store_->List("key-b")) {
    listed.push_back(info.session_id);
  }
  EXPECT_EQ(listed, std::vector<std::string>{"everyones"});
  // The owner, and the server itself (""), see it.
  EXPECT_EQ(store_->List("key-a").size(), 2u);
  EXPECT_EQ(store_->List().size(), 2u);
  EXPECT_TRUE(store_->Get("mine").ok());
  ASSERT_TRUE(store_->Begin("mine", "key-a").ok());
  store_->Abort("mine");
  EXPECT_TRUE(store_->Begin("everyones", "key-b").ok());
  store_->Abort("everyones");
  EXPECT_TRUE(store_->Close("mine", "key-a").ok());
}

}  // namespace
}  // namespace tvq::sessions
