// Migration on drain between real tvq-server replicas over loopback
// (docs/deploy.md "Migration on drain", issue 17): SIGTERM on a replica
// started with --drain-peer pushes its sessions to the peer (ImportSession),
// which continues each exactly; with the peer unreachable they go to the
// replica's own --session-dir, and a replica started on that directory
// continues them exactly; a stream still running at the drain timeout ends
// with FINISH_REASON_CANCELLED and its session, migrated, holds the state
// up to the last delivered token; once a replica's migration has started it
// takes no session into memory (a turn on a session of the shared
// --session-dir is UNAVAILABLE then, a read of it reads the file, and the
// file stays there for a successor instead of being adopted and lost at
// exit). Demo model, greedy, a few tokens a turn.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/integration/metrics_scrape.h"
#include "tests/integration/server_process.h"
#include "tests/integration/session_client.h"

namespace tvq::testing {
namespace {

constexpr int kTurnTokens = 4;
constexpr int kSessions = 3;

std::string DemoModel() { return std::string(TVQ_SOURCE_DIR) + "/models/demo"; }

std::unique_ptr<ServerProcess> StartReplica(std::vector<std::string> flags) {
  flags.push_back("--num-slots=2");
  flags.push_back("--metrics-address=127.0.0.1:0");
  auto server = ServerProcess::Start(DemoModel(), flags, absl::Seconds(60));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

std::string SessionId(int i) { return absl::StrCat("drain-", i); }

Tokens Prompt(int i) {
  return {1, 100 + 7 * i, 101 + 7 * i, 102 + 7 * i, 103 + 7 * i};
}

// A turn's tokens after the first generation.
Tokens NextTurn(int i) { return {200 + i, 201 + i}; }

// What an undisturbed single replica makes of session i: its first turn
// (prompt, kTurnTokens generated) and its second (NextTurn, kTurnTokens),
// in a session of its own on `server`, closed afterwards.
struct Transcript {
  Tokens first;
  Tokens second;
};
Transcript Undisturbed(ServerProcess& server, int i) {
  SessionClient client(server.stub());
  const std::string id = absl::StrCat("reference-", i);
  v1::Session session;
  EXPECT_TRUE(client.Create(id, Prompt(i), &session).ok());
  Transcript transcript;
  transcript.first = client.MustGenerate(id, {}, kTurnTokens);
  transcript.second = client.MustGenerate(id, NextTurn(i), kTurnTokens);
  EXPECT_TRUE(client.Close(id).ok());
  return transcript;
}

// A loopback port nothing listens on (bound, then closed).
int UnusedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), length), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length),
            0);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A loopback port that accepts connections (into the listen backlog) and
// never answers: a peer that hangs. Closed when the object goes.
class HangingPeer {
 public:
  HangingPeer() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length), 0);
    EXPECT_EQ(::listen(fd_, 64), 0);
    EXPECT_EQ(
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length), 0);
    port_ = ntohs(address.sin_port);
  }
  ~HangingPeer() { ::close(fd_); }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  int fd_;
  int port_ = 0;
};

// Creates the sessions on `replica` and runs their first turn, checking it
// against `expected`.
void StartSessions(ServerProcess& replica,
                   const std::vector<Transcript>& expected) {
  SessionClient client(replica.stub());
  for (int i = 0; i < kSessions; ++i) {
    v1::Session session;
    const grpc::Status created =
        client.Create(SessionId(i), Prompt(i), &session);
    ASSERT_TRUE(created.ok()) << created.error_code() << " " << created.error_message();
    EXPECT_EQ(client.MustGenerate(SessionId(i), {}, kTurnTokens),
              expected[i].first)
        << SessionId(i);
  }
}

// SIGTERM, then the exit code (0) and the log; prints the log's drain and
// migration lines (the figures: sessions, bytes, seconds).
std::string Drain(ServerProcess& replica) {
  replica.Signal(SIGTERM);
  EXPECT_EQ(replica.WaitForExit(absl::Seconds(60)), 0) << replica.Output();
  const std::string log = replica.Output();
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "migration:") ||
        absl::StrContains(line, "drain timeout:")) {
      std::printf("%.*s\n", static_cast<int>(line.size()), line.data());
    }
  }
  return log;
}

// Every session's second turn on `replica` equals the undisturbed run.
void ExpectContinued(ServerProcess& replica,
                     const std::vector<Transcript>& expected) {
  SessionClient client(replica.stub());
  for (int i = 0; i < kSessions; ++i) {
    v1::Session session;
    ASSERT_TRUE(client.Get(SessionId(i), &session).ok()) << SessionId(i);
    EXPECT_EQ(session.position(),
              static_cast<int64_t>(Prompt(i).size()) + kTurnTokens);
    EXPECT_EQ(client.MustGenerate(SessionId(i), NextTurn(i), kTurnTokens),
              expected[i].second)
        << SessionId(i);
  }
}

std::vector<std::string> SortedIds(ServerProcess& server) {
  std::vector<std::string> ids = ListIds(server);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<std::string> AllSessionIds() {
  std::vector<std::string> ids;
  for (int i = 0; i < kSessions; ++i) ids.push_back(SessionId(i));
  return ids;
}

// A replica with --drain-peer pushes every session to the peer on SIGTERM;
// the peer imported each and continues it exactly.
TEST(DrainMigrationTest, SigtermPushesEverySessionToThePeer) {
  std::unique_ptr<ServerProcess> peer = StartReplica({});
  ASSERT_NE(peer, nullptr);
  std::vector<Transcript> expected;
  for (int i = 0; i < kSessions; ++i) expected.push_back(Undisturbed(*peer, i));
  std::unique_ptr<ServerProcess> draining =
      StartReplica({"--drain-peer=" + peer->address()});
  ASSERT_NE(draining, nullptr);
  StartSessions(*draining, expected);
  const std::string log = Drain(*draining);
  EXPECT_NE(log.find(absl::StrCat("migration: ", kSessions,
                                  " sessions migrated")),
            std::string::npos)
      << log;
  EXPECT_NE(log.find(absl::StrCat("(", kSessions, " to the peer")),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("0 peer failures; 0 lost"), std::string::npos) << log;

  EXPECT_EQ(SortedIds(*peer), AllSessionIds());
  const std::string url = MetricsUrl(peer->Output());
  ASSERT_FALSE(url.empty()) << peer->Output();
  const Scrape scrape = ScrapeNow(url);
  EXPECT_EQ(scrape.Value("tvq_session_imports_total"), kSessions);
  EXPECT_EQ(scrape.Value("tvq_session_import_failures_total"), 0);
  ExpectContinued(*peer, expected);
}

// The peer is unreachable: the sessions go to the draining replica's own
// --session-dir, and a replica started on it continues them exactly.
TEST(DrainMigrationTest, UnreachablePeerFallsBackToTheSessionDir) {
  const std::string dir = ::testing::TempDir() + "/tvq-drain-fallback-" +
                          std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  const std::string nowhere = absl::StrCat("127.0.0.1:", UnusedPort());
  std::vector<Transcript> expected;
  {
    std::unique_ptr<ServerProcess> draining =
        StartReplica({"--drain-peer=" + nowhere, "--drain-peer-timeout=2s",
                      "--session-dir=" + dir});
    ASSERT_NE(draining, nullptr);
    for (int i = 0; i < kSessions; ++i) {
      expected.push_back(Undisturbed(*draining, i));
    }
    StartSessions(*draining, expected);
    const std::string log = Drain(*draining);
    EXPECT_NE(log.find("--drain-peer=" + nowhere + " is unreachable"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find(absl::StrCat("(0 to the peer, 0 bytes; ", kSessions,
                                    " to --session-dir")),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("; 0 lost"), std::string::npos) << log;
  }
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    files += entry.path().extension() == ".tvqsession";
  }
  EXPECT_EQ(files, kSessions);

  std::unique_ptr<ServerProcess> successor =
      StartReplica({"--session-dir=" + dir});
  ASSERT_NE(successor, nullptr);
  EXPECT_EQ(SortedIds(*successor), AllSessionIds());
  ExpectContinued(*successor, expected);
  successor.reset();
  std::filesystem::remove_all(dir);
}

// A stream still running at a short drain timeout ends with
// FINISH_REASON_CANCELLED and an OK status; its session reaches the peer
// holding the state up to the last delivered token: its next turn equals
// an undisturbed session that generated exactly the delivered tokens.
TEST(DrainMigrationTest, StreamCutAtTheDrainTimeoutMigratesUpToItsLastToken) {
  constexpr int kLongTokens = 100000;
  constexpr char kId[] = "cut";
  const Tokens prompt = {1, 72, 101, 108};
  std::unique_ptr<ServerProcess> peer =
      StartReplica({absl::StrCat("--max-new-tokens-limit=", kLongTokens)});
  ASSERT_NE(peer, nullptr);
  std::unique_ptr<ServerProcess> draining = StartReplica(
      {"--drain-peer=" + peer->address(), "--drain-timeout=300ms",
       absl::StrCat("--max-new-tokens-limit=", kLongTokens)});
  ASSERT_NE(draining, nullptr);
  SessionClient client(draining->stub());
  v1::Session session;
  const grpc::Status created = client.Create(kId, prompt, &session);
  ASSERT_TRUE(created.ok()) << created.error_code() << " " << created.error_message();

  v1::GenerateRequest request;
  request.set_session_id(kId);
  request.set_max_new_tokens(kLongTokens);
  request.set_ignore_eos(true);
  request.set_temperature(0);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  auto reader = draining->stub().GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));  // running now
  Tokens delivered(message.token_ids().begin(), message.token_ids().end());
  draining->Signal(SIGTERM);
  v1::GenerateStreamResponse last = message;
  while (reader->Read(&message)) {
    delivered.insert(delivered.end(), message.token_ids().begin(),
                     message.token_ids().end());
    last = message;
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(last.usage().generated_tokens(),
            static_cast<int>(delivered.size()));
  ASSERT_GT(delivered.size(), 0u);
  ASSERT_LT(delivered.size(), static_cast<size_t>(kLongTokens));
  std::printf("cut after %zu delivered tokens\n", delivered.size());
  const std::string log = Drain(*draining);
  EXPECT_NE(log.find("drain timeout: 1 requests cut short"), std::string::npos)
      << log;
  EXPECT_NE(log.find("(1 to the peer"), std::string::npos) << log;

  SessionClient on_peer(peer->stub());
  ASSERT_TRUE(on_peer.Get(kId, &session).ok());
  EXPECT_EQ(session.position(),
            static_cast<int64_t>(prompt.size() + delivered.size()));
  const Tokens continued = on_peer.MustGenerate(kId, {32}, kTurnTokens);

  // Undisturbed: the same prompt, exactly the delivered tokens, one turn.
  ASSERT_TRUE(on_peer.Create("cut-reference", prompt, &session).ok());
  EXPECT_EQ(on_peer.MustGenerate("cut-reference", {},
                                 static_cast<int>(delivered.size())),
            delivered);
  EXPECT_EQ(on_peer.MustGenerate("cut-reference", {32}, kTurnTokens),
            continued);
}

// Two replicas share a --session-dir. While the draining one is still
// pushing its sessions to a peer that hangs (its migration has listed what
// it moves), a client runs a turn on a session the other replica left in
// the directory: UNAVAILABLE, and the file stays, so a successor continues
// both that session and the draining replica's own exactly. (Adopting it
// then lost it: it was taken from the directory after the migration's
// listing and went with the process.) Reading it (GetSession) reads the
// file and leaves it there, draining or not.
TEST(DrainMigrationTest, ADrainingReplicaTakesNoSessionFromTheSharedDir) {
  const std::string dir = ::testing::TempDir() + "/tvq-drain-shared-" +
                          std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  constexpr int kGuest = kSessions;  // session index of the other replica's
  const std::string guest = SessionId(kGuest);
  HangingPeer hanging;
  std::vector<Transcript> expected;
  std::unique_ptr<ServerProcess> draining =
      StartReplica({"--drain-peer=" + hanging.address(),
                    "--drain-peer-timeout=6s", "--session-dir=" + dir});
  ASSERT_NE(draining, nullptr);
  for (int i = 0; i <= kGuest; ++i) {
    expected.push_back(Undisturbed(*draining, i));
  }
  StartSessions(*draining, expected);
  {
    // The other replica's session goes to the shared directory.
    std::unique_ptr<ServerProcess> other =
        StartReplica({"--session-dir=" + dir});
    ASSERT_NE(other, nullptr);
    SessionClient client(other->stub());
    v1::Session session;
    ASSERT_TRUE(client.Create(guest, Prompt(kGuest), &session).ok());
    EXPECT_EQ(client.MustGenerate(guest, {}, kTurnTokens),
              expected[kGuest].first);
    const std::string log = Drain(*other);
    EXPECT_NE(log.find("(0 to the peer, 0 bytes; 1 to --session-dir"),
              std::string::npos)
        << log;
  }

  draining->Signal(SIGTERM);
  // The scheduler has nothing to drain; the first push hangs for 6 s.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  SessionClient client(draining->stub());
  v1::Session session;
  const grpc::Status asked = client.Get(guest, &session);
  ASSERT_TRUE(asked.ok()) << asked.error_message();
  EXPECT_EQ(session.tier(), v1::SESSION_TIER_DISK);
  v1::GenerateResponse response;
  const grpc::Status turn =
      client.Generate(guest, NextTurn(kGuest), kTurnTokens, &response);
  EXPECT_EQ(turn.error_code(), grpc::StatusCode::UNAVAILABLE)
      << turn.error_message();
  const grpc::Status forked = client.Fork(SessionId(0), "fork-0", &session);
  EXPECT_EQ(forked.error_code(), grpc::StatusCode::UNAVAILABLE)
      << forked.error_message();
  EXPECT_EQ(draining->WaitForExit(absl::Seconds(60)), 0) << draining->Output();
  const std::string log = draining->Output();
  EXPECT_NE(log.find(absl::StrCat("(0 to the peer, 0 bytes; ", kSessions,
                                  " to --session-dir")),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("; 0 lost"), std::string::npos) << log;
  draining.reset();

  std::unique_ptr<ServerProcess> successor =
      StartReplica({"--session-dir=" + dir});
  ASSERT_NE(successor, nullptr);
  std::vector<std::string> all = AllSessionIds();
  all.push_back(guest);
  EXPECT_EQ(SortedIds(*successor), all);
  SessionClient on_successor(successor->stub());
  for (int i = 0; i <= kGuest; ++i) {
    EXPECT_EQ(on_successor.MustGenerate(SessionId(i), NextTurn(i), kTurnTokens),
              expected[i].second)
        << SessionId(i);
  }
  successor.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tvq::testing
