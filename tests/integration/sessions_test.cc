// Sessions over gRPC against the real tvq-server (docs/sessions.md):
// exactness of multi-turn generation and scoring against one request over
// the whole sequence (golden models and the demo model), fork, export ->
// restart -> import, corrupted / truncated / foreign / future blobs, many
// more sessions than slots, LRU eviction under a small budget with pinned
// sessions kept, one request at a time per session, validation.
#include <signal.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/integration/metrics_scrape.h"
#include "tests/integration/server_process.h"
#include "tests/integration/session_client.h"
#include "tests/metrics/prometheus_text.h"
#include "tests/support/sanitizers.h"

namespace tvq::testing {
namespace {

std::chrono::system_clock::time_point In60s() {
  return std::chrono::system_clock::now() + std::chrono::seconds(60);
}

std::unique_ptr<ServerProcess> StartServer(
    const std::string& model, std::vector<std::string> flags = {}) {
  flags.push_back("--num-slots=2");
  auto server = ServerProcess::Start(model, flags);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// ------------------------------------------------------------ exactness

class SessionExactnessTest : public ::testing::TestWithParam<std::string> {};

std::string ModelPath(const std::string& name) {
  if (name == "demo") return std::string(TVQ_SOURCE_DIR) + "/models/demo";
  return GoldenModel(name);
}

// Three greedy turns in a session = one Generate over every token; the
// session's position counts them all; cached_tokens is the state's position.
TEST_P(SessionExactnessTest, ThreeTurnsEqualOneGenerate) {
  if (GetParam() == "tiny-tied") TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<ServerProcess> server = StartServer(ModelPath(GetParam()));
  ASSERT_NE(server, nullptr);
  SessionClient client(server->stub());
  const Tokens p1 = {1, 40, 73, 90, 100, 104, 111, 33, 50, 60, 70};
  const Tokens p2 = {35, 36, 120, 121, 122, 44, 45, 46, 47, 48, 49, 50, 51};
  const Tokens p3 = {77, 78};
  v1::Session session;
  ASSERT_TRUE(client.Create("chat", p1, &session).ok());
  EXPECT_EQ(session.position(), static_cast<int64_t>(p1.size()));

  v1::GenerateResponse first;
  ASSERT_TRUE(client.Generate("chat", {}, 7, &first).ok());
  const Tokens g1(first.token_ids().begin(), first.token_ids().end());
  EXPECT_EQ(first.usage().cached_tokens(), static_cast<int>(p1.size()) - 1);
  EXPECT_EQ(g1, client.MustGenerate("", p1, 7));

  v1::GenerateResponse second;
  ASSERT_TRUE(client.Generate("chat", p2, 9, &second).ok());
  const Tokens g2(second.token_ids().begin(), second.token_ids().end());
  EXPECT_EQ(second.usage().cached_tokens(),
            static_cast<int>(p1.size() + g1.size()) - 1);
  EXPECT_EQ(g2, client.MustGenerate("", Concat({p1, g1, p2}), 9));

  const Tokens g3 = client.MustGenerate("chat", p3, 12);
  EXPECT_EQ(g3, client.MustGenerate("", Concat({p1, g1, p2, g2, p3}), 12));
  ASSERT_TRUE(client.Get("chat", &session).ok());
  EXPECT_EQ(session.position(),
            static_cast<int64_t>(Concat({p1, g1, p2, g2, p3, g3}).size()));
  EXPECT_EQ(session.tier(), v1::SESSION_TIER_HOST);
  EXPECT_GT(session.state_bytes(), 0);
}

// Score in a session = the tail of Score over the whole sequence (within
// 2e-5: the same engine, with prompts cut into other prefill chunks).
TEST_P(SessionExactnessTest, ScoreInSessionEqualsWholeSequence) {
  if (GetParam() == "tiny-tied") TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  std::unique_ptr<ServerProcess> server = StartServer(ModelPath(GetParam()));
  ASSERT_NE(server, nullptr);
  SessionClient client(server->stub());
  const Tokens prefix = {1, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61};
  const Tokens appended = {70, 71, 72, 73, 74};
  const Tokens scored = {80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91};
  v1::Session session;
  ASSERT_TRUE(client.Create("scored", prefix, &session).ok());
  ASSERT_TRUE(client.Append("scored", appended, &session).ok());
  EXPECT_EQ(session.position(),
            static_cast<int64_t>(prefix.size() + appended.size()));
  v1::ScoreResponse in_session;
  ASSERT_TRUE(client.Score("scored", scored, &in_session).ok());
  v1::ScoreResponse whole;
  ASSERT_TRUE(
      client.Score("", Concat({prefix, appended, scored}), &whole).ok());
  ASSERT_EQ(in_session.token_logprobs_size(), static_cast<int>(scored.size()));
  const int offset =
      whole.token_logprobs_size() - in_session.token_logprobs_size();
  for (int i = 0; i < in_session.token_logprobs_size(); ++i) {
    EXPECT_EQ(in_session.token_logprobs(i).token_id(),
              whole.token_logprobs(offset + i).token_id());
    EXPECT_NEAR(in_session.token_logprobs(i).logprob(),
                whole.token_logprobs(offset + i).logprob(), 2e-5)
        << "position " << i;
  }
  EXPECT_EQ(in_session.token_ids(0), appended.back());
  // The session then holds the scored tokens too: generating from it equals
  // generating after the whole sequence.
  EXPECT_EQ(client.MustGenerate("scored", {}, 6),
            client.MustGenerate("", Concat({prefix, appended, scored}), 6));
}

INSTANTIATE_TEST_SUITE_P(Models, SessionExactnessTest,
                         ::testing::Values("tiny-byte", "tiny-noagg",
                                           "tiny-tied", "demo"));

// ------------------------------------------------------------ one server

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = StartServer(GoldenModel("tiny-byte")).release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  SessionClient client() { return SessionClient(server_->stub()); }
  static ServerProcess* server_;
};

ServerProcess* SessionTest::server_ = nullptr;

TEST_F(SessionTest, ForksWithTheSameSeedAgreeAndStayIndependent) {
  SessionClient c = client();
  v1::Session session;
  ASSERT_TRUE(c.Create("root", {1, 60, 61, 62, 63, 64}, &session).ok());
  c.MustGenerate("root", {}, 4);
  ASSERT_TRUE(c.Fork("root", "left", &session).ok());
  ASSERT_TRUE(c.Fork("root", "right", &session).ok());
  std::string right_before;
  ASSERT_TRUE(c.Export("right", &right_before).ok());
  const Tokens left = c.MustGenerate("left", {70}, 16, 1.0f, 1234);
  std::string right_after;
  ASSERT_TRUE(c.Export("right", &right_after).ok());
  EXPECT_EQ(right_before, right_after)
      << "generating on a fork changed another";
  EXPECT_EQ(left, c.MustGenerate("right", {70}, 16, 1.0f, 1234));
  std::string root_blob;
  ASSERT_TRUE(c.Export("root", &root_blob).ok());
  v1::Session root;
  ASSERT_TRUE(c.Get("root", &root).ok());
  EXPECT_EQ(root.position(), 6 + 4);
  // A fork with a server-made id.
  ASSERT_TRUE(c.Fork("root", "", &session).ok());
  EXPECT_EQ(session.session_id().rfind("sess-", 0), 0u) << session.session_id();
  EXPECT_EQ(session.position(), root.position());
}

TEST_F(SessionTest, SecondConcurrentRequestFailsAtOnceAndCancelLeavesSession) {
  SessionClient c = client();
  v1::Session before;
  ASSERT_TRUE(c.Create("busy", {1, 80, 81, 82}, &before).ok());
  std::string blob_before;
  ASSERT_TRUE(c.Export("busy", &blob_before).ok());

  v1::GenerateRequest request;
  request.set_session_id("busy");
  request.set_max_new_tokens(4000);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  auto reader = server_->stub().GenerateStream(&context, request);
  v1::GenerateStreamResponse message;
  ASSERT_TRUE(reader->Read(&message));  // it is running now

  v1::GenerateResponse second;
  const grpc::Status refused = c.Generate("busy", {90}, 2, &second);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("\"busy\""), std::string::npos)
      << refused.error_message();
  v1::Session during;
  ASSERT_TRUE(c.Get("busy", &during).ok());
  EXPECT_EQ(during.tier(), v1::SESSION_TIER_SLOT);
  EXPECT_EQ(c.Close("busy").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The cancelled request left the session exactly as it was (the lease
  // ends when the scheduler has ended the request: poll until idle).
  v1::Session after;
  for (int i = 0; i < 600; ++i) {
    ASSERT_TRUE(c.Get("busy", &after).ok());
    if (after.tier() == v1::SESSION_TIER_HOST) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(after.tier(), v1::SESSION_TIER_HOST);
  EXPECT_EQ(after.position(), before.position());
  std::string blob_after;
  ASSERT_TRUE(c.Export("busy", &blob_after).ok());
  EXPECT_EQ(blob_before, blob_after);
  ASSERT_TRUE(c.Close("busy").ok());
}

TEST_F(SessionTest, TenTimesMoreSessionsThanSlotsAllUsable) {
  SessionClient c = client();
  const int kSessions = 20;  // the server has 2 slots
  std::vector<Tokens> prompts;
  for (int i = 0; i < kSessions; ++i) {
    prompts.push_back({1, 10 + i, 20 + i, 30 + i, 40 + i});
    v1::Session session;
    ASSERT_TRUE(c.Create(absl::StrCat("many-", i), prompts[i], &session).ok());
  }
  std::vector<Tokens> first(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    first[i] = c.MustGenerate(absl::StrCat("many-", i), {}, 3);
  }
  for (int i = 0; i < kSessions; ++i) {
    EXPECT_EQ(c.MustGenerate(absl::StrCat("many-", i), {50}, 3),
              c.MustGenerate("", Concat({prompts[i], first[i], {50}}), 3))
        << "session " << i;
  }
  v1::ListSessionsRequest list;
  v1::ListSessionsResponse listed;
  grpc::ClientContext context;
  ASSERT_TRUE(server_->stub().ListSessions(&context, list, &listed).ok());
  int many = 0;
  for (const v1::Session& session : listed.sessions()) {
    if (session.session_id().rfind("many-", 0) == 0) ++many;
  }
  EXPECT_EQ(many, kSessions);
  for (int i = 0; i < kSessions; ++i) {
    EXPECT_TRUE(c.Close(absl::StrCat("many-", i)).ok());
  }
}

TEST_F(SessionTest, ErrorsNameTheSessionAndField) {
  SessionClient c = client();
  v1::GenerateResponse response;
  grpc::Status status = c.Generate("nobody", {5}, 1, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("\"nobody\""), std::string::npos);
  status = c.Generate("bad id", {5}, 1, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("session_id"), std::string::npos);
  v1::Session session;
  ASSERT_TRUE(c.Create("dup", {}, &session).ok());
  EXPECT_EQ(session.position(), 0);
  EXPECT_EQ(c.Create("dup", {}, &session).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  // An empty session with an empty prompt has nothing to generate from.
  status = c.Generate("dup", {}, 1, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Closed: gone, and the message says so.
  ASSERT_TRUE(c.Close("dup").ok());
  status = c.Get("dup", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("closed"), std::string::npos);
  v1::CreateSessionRequest negative;
  negative.set_ttl_seconds(-1);
  grpc::ClientContext context;
  status = server_->stub().CreateSession(&context, negative, &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("ttl_seconds"), std::string::npos);
}

// An empty session starts with the eos prefix like Generate, unless
// no_eos_prefix.
TEST_F(SessionTest, EmptySessionGetsTheEosPrefix) {
  SessionClient c = client();
  v1::Session session;
  ASSERT_TRUE(c.Create("fresh", {}, &session).ok());
  v1::GenerateRequest request;
  request.set_session_id("fresh");
  request.set_text("hello");
  request.set_max_new_tokens(5);
  request.set_temperature(0);
  request.set_ignore_eos(true);
  v1::GenerateResponse in_session;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(server_->stub().Generate(&context, request, &in_session).ok());
  }
  request.clear_session_id();
  v1::GenerateResponse plain;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(server_->stub().Generate(&context, request, &plain).ok());
  }
  EXPECT_EQ(
      std::vector<int32_t>(in_session.token_ids().begin(),
                           in_session.token_ids().end()),
      std::vector<int32_t>(plain.token_ids().begin(), plain.token_ids().end()));
  ASSERT_TRUE(c.Get("fresh", &session).ok());
  EXPECT_EQ(session.position(), 1 + 5 + 5);  // eos + "hello" + 5 generated
}

// ------------------------------------------------------------ blobs

TEST(SessionBlobTest, ExportRestartImportContinuesExactly) {
  const Tokens prompt = {1, 90, 91, 92, 93, 94, 95, 96, 97, 98};
  std::string blob;
  Tokens uninterrupted;
  {
    std::unique_ptr<ServerProcess> server =
        StartServer(GoldenModel("tiny-byte"));
    ASSERT_NE(server, nullptr);
    SessionClient c(server->stub());
    v1::Session session;
    ASSERT_TRUE(c.Create("moved", prompt, &session).ok());
    c.MustGenerate("moved", {}, 5);
    int chunks = 0;
    ASSERT_TRUE(c.Export("moved", &blob, &chunks).ok());
    EXPECT_GE(chunks, 1);
    uninterrupted = c.MustGenerate("moved", {33, 34}, 10);
  }
  std::unique_ptr<ServerProcess> server = StartServer(GoldenModel("tiny-byte"));
  ASSERT_NE(server, nullptr);
  SessionClient c(server->stub());
  v1::Session imported;
  ASSERT_TRUE(c.Import(blob, "moved", &imported).ok());
  EXPECT_EQ(imported.session_id(), "moved");
  EXPECT_EQ(imported.position(), static_cast<int64_t>(prompt.size()) + 5);
  EXPECT_EQ(c.MustGenerate("moved", {33, 34}, 10), uninterrupted);
  // The same blob again under a server-made id, in one big chunk.
  ASSERT_TRUE(c.Import(blob, "", &imported, size_t{1} << 20).ok());
  EXPECT_EQ(c.MustGenerate(imported.session_id(), {33, 34}, 10), uninterrupted);
}

TEST(SessionBlobTest, BadBlobsFailWithTheirOwnStatusAndTheServerServes) {
  std::string foreign;
  {
    std::unique_ptr<ServerProcess> other =
        StartServer(GoldenModel("tiny-noagg"));
    ASSERT_NE(other, nullptr);
    SessionClient c(other->stub());
    v1::Session session;
    ASSERT_TRUE(c.Create("x", {1, 5, 6, 7}, &session).ok());
    ASSERT_TRUE(c.Export("x", &foreign).ok());
  }
  std::unique_ptr<ServerProcess> server = StartServer(GoldenModel("tiny-byte"));
  ASSERT_NE(server, nullptr);
  SessionClient c(server->stub());
  v1::Session session;
  ASSERT_TRUE(
      c.Create("good", {1, 5, 6, 7, 8, 9, 10, 11, 12, 13}, &session).ok());
  std::string blob;
  ASSERT_TRUE(c.Export("good", &blob).ok());

  std::string flipped = blob;
  flipped[blob.size() / 2] ^= 0x10;
  grpc::Status status = c.Import(flipped, "", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS)
      << status.error_message();
  EXPECT_NE(status.error_message().find("checksum"), std::string::npos);

  status = c.Import(blob.substr(0, blob.size() - 7), "", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS)
      << status.error_message();

  status = c.Import(foreign, "", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << status.error_message();
  EXPECT_NE(status.error_message().find("model fingerprint"), std::string::npos)
      << status.error_message();

  std::string future = blob;
  future[8] = 2;  // format version 2
  status = c.Import(future, "", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("version 2"), std::string::npos)
      << status.error_message();

  // A consistent-looking blob (CRC recomputed) whose header disagrees with
  // its state about the position.
  std::string lying = blob;
  for (size_t offset : {size_t{64}, size_t{72}}) {  // position, token count
    lying[offset] = static_cast<char>(lying[offset] + 1);
  }
  const uint32_t crc = static_cast<uint32_t>(crc32(
      0L, reinterpret_cast<const Bytef*>(lying.data()), lying.size() - 4));
  for (int i = 0; i < 4; ++i) {
    lying[lying.size() - 4 + i] = static_cast<char>(crc >> (8 * i));
  }
  status = c.Import(lying, "", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("absorbed"), std::string::npos)
      << status.error_message();

  status = c.Import("not a blob at all, just some text", "", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  status = c.Import(blob, "good", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);

  // Still serving, and the good session is intact.
  v1::GenerateResponse response;
  EXPECT_TRUE(c.Generate("good", {}, 3, &response).ok());
  EXPECT_TRUE(c.Generate("", {1, 2, 3}, 3, &response).ok());
}

// ------------------------------------------------------------ budget

TEST(SessionBudgetTest, LeastRecentlyUsedUnpinnedAreEvictedPinnedNever) {
  int64_t state_bytes = 0;
  {
    std::unique_ptr<ServerProcess> probe =
        StartServer(GoldenModel("tiny-byte"));
    ASSERT_NE(probe, nullptr);
    SessionClient c(probe->stub());
    v1::Session session;
    ASSERT_TRUE(c.Create("probe", {1, 2, 3}, &session).ok());
    state_bytes = session.state_bytes();
    ASSERT_GT(state_bytes, 0);
  }
  // Room for exactly 3 sessions.
  std::unique_ptr<ServerProcess> server = StartServer(
      GoldenModel("tiny-byte"),
      {absl::StrCat("--session-memory-bytes=", 3 * state_bytes + 1)});
  ASSERT_NE(server, nullptr);
  SessionClient c(server->stub());
  v1::Session session;
  ASSERT_TRUE(c.Create("pinned", {1, 4, 5}, &session, /*pinned=*/true).ok());
  EXPECT_TRUE(session.pinned());
  EXPECT_EQ(session.expires_at(), 0);
  ASSERT_TRUE(c.Create("a", {1, 6, 7}, &session).ok());
  EXPECT_GT(session.expires_at(), session.last_used());
  ASSERT_TRUE(c.Create("b", {1, 8, 9}, &session).ok());
  c.MustGenerate("a", {}, 2);  // a is now more recent than b
  ASSERT_TRUE(c.Create("c", {1, 10, 11}, &session).ok());  // evicts b
  grpc::Status status = c.Get("b", &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find("evicted"), std::string::npos)
      << status.error_message();
  EXPECT_TRUE(c.Get("a", &session).ok());
  ASSERT_TRUE(c.Create("d", {1, 12, 13}, &session).ok());  // evicts a
  EXPECT_EQ(c.Get("a", &session).error_code(), grpc::StatusCode::NOT_FOUND);
  for (const char* id : {"e", "f", "g", "h"}) {
    ASSERT_TRUE(c.Create(id, {1, 14}, &session).ok());
  }
  EXPECT_TRUE(c.Get("pinned", &session).ok());
  EXPECT_EQ(c.MustGenerate("pinned", {}, 3), c.MustGenerate("", {1, 4, 5}, 3));
  // Fill the budget with pinned sessions: then nothing can be evicted.
  ASSERT_TRUE(c.Create("pinned2", {1}, &session, true).ok());
  ASSERT_TRUE(c.Create("pinned3", {1}, &session, true).ok());
  status = c.Create("one-too-many", {1}, &session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
  EXPECT_NE(status.error_message().find("--session-memory-bytes"),
            std::string::npos);
  v1::GetModelInfoRequest info_request;
  v1::GetModelInfoResponse info;
  grpc::ClientContext context;
  ASSERT_TRUE(server->stub().GetModelInfo(&context, info_request, &info).ok());
  EXPECT_EQ(info.limits().max_sessions(), 3);
  EXPECT_EQ(info.limits().session_memory_bytes(), 3 * state_bytes + 1);
}

// ------------------------------------------------------------ prefix reuse

// A request that extends an earlier one (its prompt and generated tokens)
// resumes from the earlier end-of-request state: cached_tokens = the tokens
// that state absorbed (the earlier sequence less its last token, which is
// fed again), and the tokens equal a server with reuse turned off.
TEST(PrefixReuseTest, ExtendingAnEarlierRequestReusesItsStateExactly) {
  std::unique_ptr<ServerProcess> reuse = StartServer(GoldenModel("tiny-byte"));
  std::unique_ptr<ServerProcess> cold =
      StartServer(GoldenModel("tiny-byte"), {"--prefix-reuse=false"});
  ASSERT_NE(reuse, nullptr);
  ASSERT_NE(cold, nullptr);
  SessionClient on(reuse->stub());
  SessionClient off(cold->stub());
  const Tokens prompt = {1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29};
  v1::GenerateResponse first;
  ASSERT_TRUE(on.Generate("", prompt, 8, &first).ok());
  EXPECT_EQ(first.usage().cached_tokens(), 0);
  const Tokens g1(first.token_ids().begin(), first.token_ids().end());
  EXPECT_EQ(g1, off.MustGenerate("", prompt, 8));

  const Tokens history = Concat({prompt, g1, {40, 41, 42}});
  v1::GenerateResponse second;
  ASSERT_TRUE(on.Generate("", history, 8, &second).ok());
  EXPECT_EQ(second.usage().cached_tokens(),
            static_cast<int>(prompt.size() + g1.size()) - 1);
  EXPECT_EQ(second.usage().prompt_tokens(), static_cast<int>(history.size()));
  const Tokens g2(second.token_ids().begin(), second.token_ids().end());
  v1::GenerateResponse cold_second;
  ASSERT_TRUE(off.Generate("", history, 8, &cold_second).ok());
  EXPECT_EQ(cold_second.usage().cached_tokens(), 0);
  EXPECT_EQ(g2, Tokens(cold_second.token_ids().begin(),
                       cold_second.token_ids().end()));

  // A third turn reuses the second; a prompt that diverges early reuses
  // nothing longer than what it shares.
  const Tokens third = Concat({history, g2, {50}});
  v1::GenerateResponse third_response;
  ASSERT_TRUE(on.Generate("", third, 5, &third_response).ok());
  EXPECT_EQ(third_response.usage().cached_tokens(),
            static_cast<int>(history.size() + g2.size()) - 1);
  EXPECT_EQ(Tokens(third_response.token_ids().begin(),
                   third_response.token_ids().end()),
            off.MustGenerate("", third, 5));
  v1::GenerateResponse diverged;
  ASSERT_TRUE(on.Generate("", {1, 20, 21, 99, 98}, 5, &diverged).ok());
  EXPECT_EQ(diverged.usage().cached_tokens(), 0);
  EXPECT_EQ(Tokens(diverged.token_ids().begin(), diverged.token_ids().end()),
            off.MustGenerate("", {1, 20, 21, 99, 98}, 5));
  // Retained states are not sessions.
  EXPECT_TRUE(ListIds(*reuse).empty());
}

// ------------------------------------------------------------ disk tier

// Evicted sessions spill to --session-dir and come back exactly; every
// session is saved at shutdown and a restarted server continues them; a
// corrupt file and another model's files are reported and skipped; a stray
// temporary file is removed, and a session whose take was interrupted is
// restored and continued.
// A session file of format version 2 without an owner, rewritten as a
// server from before owners (version 1: no owner-length field) wrote it.
void RewriteAsVersion1(const std::string& path) {
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GE(bytes.size(), 44u) << path;
  ASSERT_EQ(bytes[8], 2) << path;
  ASSERT_EQ(bytes.substr(36, 4), std::string(4, '\0')) << "has an owner";
  std::string v1 = bytes.substr(0, 36) + bytes.substr(40, bytes.size() - 44);
  v1[8] = 1;
  const uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(v1.data()),
                          static_cast<uInt>(v1.size()));
  for (int i = 0; i < 4; ++i) v1.push_back(static_cast<char>(crc >> (8 * i)));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << v1;
}

TEST(SessionDiskTest, SpillRestartContinueAndSkipBadFiles) {
  const std::string dir =
      ::testing::TempDir() + "/tvq-sessions-disk-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  const std::vector<std::string> flags = {
      "--session-dir=" + dir, "--session-memory-bytes=165200"};  // 2 states
  const std::vector<Tokens> prompts = {
      {1, 30, 31, 32, 33}, {1, 40, 41, 42, 43}, {1, 50, 51, 52, 53}};
  std::vector<Tokens> first(3);
  {
    std::unique_ptr<ServerProcess> server =
        StartServer(GoldenModel("tiny-byte"), flags);
    ASSERT_NE(server, nullptr);
    SessionClient c(server->stub());
    v1::Session session;
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(c.Create(absl::StrCat("d", i), prompts[i], &session).ok());
    }
    ASSERT_TRUE(c.Get("d0", &session).ok());  // evicted to disk by d2
    EXPECT_EQ(session.tier(), v1::SESSION_TIER_DISK);
    for (int i = 0; i < 3; ++i) {
      first[i] = c.MustGenerate(absl::StrCat("d", i), {}, 4);
      EXPECT_EQ(first[i], c.MustGenerate("", prompts[i], 4)) << i;
    }
    server->Signal(SIGTERM);  // drains, then saves every session
    EXPECT_EQ(server->WaitForExit(absl::Seconds(30)), 0) << server->Output();
  }
  // A corrupt file and a stray temporary file.
  {
    std::ofstream corrupt(dir + "/00.tvqsession", std::ios::binary);
    corrupt << "TVQSDISK this is not a session";
    std::ofstream temporary(dir + "/6430.tvqsession.tmp-1234",
                            std::ios::binary);
    temporary << "half";
  }
  // Another model sees only foreign files: reported, skipped, kept.
  {
    std::unique_ptr<ServerProcess> other =
        StartServer(GoldenModel("tiny-noagg"), flags);
    ASSERT_NE(other, nullptr);
    EXPECT_TRUE(ListIds(*other).empty());
    EXPECT_NE(other->Output().find("FAILED_PRECONDITION"), std::string::npos)
        << other->Output();
  }
  // d2 as written by a server of format version 1: still read.
  RewriteAsVersion1(dir + "/6432.tvqsession");
  // d1 as a server killed mid-take leaves it: claimed (renamed to its
  // private name), never unlinked, never in memory. It is restored.
  std::filesystem::rename(dir + "/6431.tvqsession",
                          dir + "/6431.tvqsession.tmp-taking-0123456789abcdef");
  std::unique_ptr<ServerProcess> server =
      StartServer(GoldenModel("tiny-byte"), flags);
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->Output().find("00.tvqsession"), std::string::npos)
      << server->Output();
  EXPECT_FALSE(std::filesystem::exists(dir + "/6430.tvqsession.tmp-1234"));
  EXPECT_NE(server->Output().find("restored as "), std::string::npos)
      << server->Output();
  EXPECT_EQ(ListIds(*server), (std::vector<std::string>{"d0", "d1", "d2"}));
  SessionClient c(server->stub());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c.MustGenerate(absl::StrCat("d", i), {60}, 5),
              c.MustGenerate("", Concat({prompts[i], first[i], {60}}), 5))
        << i;
  }
  v1::Session session;
  ASSERT_TRUE(c.Close("d0").ok());
  EXPECT_EQ(c.Get("d0", &session).error_code(), grpc::StatusCode::NOT_FOUND);
  std::filesystem::remove_all(dir);
}

TEST(SessionFlagsTest, BadSessionFlagsStopTheServerNamingThem) {
  ServerProcess::Exit exit = ServerProcess::RunToExit(
      {"--model=" + GoldenModel("tiny-byte"), "--listen=127.0.0.1:0",
       "--metrics-address=", "--session-memory-bytes=1000"});
  EXPECT_NE(exit.exit_code, 0);
  EXPECT_NE(exit.output.find("--session-memory-bytes=1000 holds no session"),
            std::string::npos)
      << exit.output;
  exit = ServerProcess::RunToExit(
      {"--model=" + GoldenModel("tiny-byte"), "--session-ttl=0s"});
  EXPECT_NE(exit.exit_code, 0);
  EXPECT_NE(exit.output.find("--session-ttl"), std::string::npos)
      << exit.output;
  exit = ServerProcess::RunToExit(
      {"--model=" + GoldenModel("tiny-byte"), "--listen=127.0.0.1:0",
       "--metrics-address=", "--session-dir=/proc/no-such-dir"});
  EXPECT_NE(exit.exit_code, 0);
  EXPECT_NE(exit.output.find("--session-dir"), std::string::npos)
      << exit.output;
}

// ------------------------------------------------------------ metrics

TEST(SessionMetricsTest, TiersEvictionsTransfersAndCacheConfig) {
  // Room for 2 sessions (the tiny models' saved state is 82,600 bytes).
  constexpr int64_t kStateBytes = 82600;
  std::unique_ptr<ServerProcess> server =
      StartServer(GoldenModel("tiny-byte"),
                  {"--metrics-address=127.0.0.1:0",
                   absl::StrCat("--session-memory-bytes=", 2 * kStateBytes)});
  ASSERT_NE(server, nullptr);
  const std::string url = MetricsUrl(server->Output());
  ASSERT_FALSE(url.empty()) << server->Output();
  SessionClient c(server->stub());
  Scrape scrape = ScrapeNow(url);
  EXPECT_EQ(scrape.Value("tvq_sessions", {{"tier", "host"}}), 0);
  EXPECT_EQ(scrape.Value("tvq_session_capacity"), 2);
  EXPECT_EQ(scrape.Value("tvq_cache_config_info",
                         {{"block_size", "1"}, {"num_gpu_blocks", "2"}}),
            1);
  v1::Session session;
  ASSERT_TRUE(c.Create("m1", {1, 2, 3}, &session, /*pinned=*/true).ok());
  ASSERT_EQ(session.state_bytes(), kStateBytes);
  ASSERT_TRUE(c.Create("m2", {1, 4, 5}, &session).ok());
  ASSERT_TRUE(c.Create("m3", {1, 6, 7}, &session).ok());  // evicts m2
  std::string blob;
  ASSERT_TRUE(c.Export("m1", &blob).ok());
  ASSERT_TRUE(c.Close("m3").ok());
  ASSERT_TRUE(c.Import(blob, "m4", &session).ok());
  EXPECT_FALSE(c.Import(blob.substr(1), "m5", &session).ok());
  scrape = ScrapeNow(url);
  EXPECT_EQ(scrape.Value("tvq_sessions", {{"tier", "host"}}), 2);
  EXPECT_EQ(scrape.Value("tvq_sessions", {{"tier", "slot"}}), 0);
  EXPECT_EQ(scrape.Value("tvq_session_state_bytes", {{"tier", "host"}}),
            2 * kStateBytes);
  EXPECT_EQ(scrape.Value("tvq_sessions_pinned"), 1);
  EXPECT_EQ(scrape.Value("tvq_session_evictions_total"), 1);
  EXPECT_EQ(scrape.Value("tvq_session_expiries_total"), 0);
  EXPECT_EQ(scrape.Value("tvq_session_exports_total"), 1);
  EXPECT_EQ(scrape.Value("tvq_session_export_bytes_total"),
            static_cast<double>(blob.size()));
  EXPECT_EQ(scrape.Value("tvq_session_imports_total"), 1);
  EXPECT_EQ(scrape.Value("tvq_session_import_bytes_total"),
            static_cast<double>(blob.size()));
  EXPECT_EQ(scrape.Value("tvq_session_import_failures_total"), 1);
  // The prompts were prefilled by append requests.
  EXPECT_GE(scrape.Value("tvq_requests_finished_total",
                         {{"kind", "append"}, {"reason", "complete"}}),
            3);
}

}  // namespace
}  // namespace tvq::testing
