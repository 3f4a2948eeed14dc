// Regression tests for the failures an adversarial test found (issue 15):
// each runs the real tvq-server and does what a hostile client or operator
// did, then checks that the server answers as documented
// (docs/security.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/server_process.h"
#include "tests/support/sanitizers.h"

namespace tvq::testing {
namespace {

constexpr char kLongLimit[] = "--max-new-tokens-limit=100000000";

v1::GenerateRequest LongRequest(int max_new_tokens = 100000000) {
  v1::GenerateRequest request;
  request.set_text("a long story");
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_eos(true);
  request.set_seed(3);
  return request;
}

// A temporary copy of a golden model directory whose config.json has
// `edits` applied (key -> new value); removed at destruction.
class EditedModel {
 public:
  EditedModel(const std::string& golden, const nlohmann::json& edits) {
    char pattern[] = "/tmp/tvq-model-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    const std::filesystem::path source = GoldenModel(golden);
    for (const auto& entry : std::filesystem::directory_iterator(source)) {
      if (entry.path().filename() == "config.json") continue;
      std::filesystem::copy(entry.path(), directory_ / entry.path().filename());
    }
    std::ifstream in(source / "config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    for (const auto& [key, value] : edits.items()) config[key] = value;
    std::ofstream(directory_ / "config.json") << config.dump(2);
  }
  ~EditedModel() { std::filesystem::remove_all(directory_); }
  std::string path() const { return directory_.string(); }

 private:
  std::filesystem::path directory_;
};

// Waits until the server's output contains `text`; false after `timeout`.
bool WaitForOutput(ServerProcess& server, const std::string& text,
                   absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (server.Output().find(text) != std::string::npos) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

// ------------------------------------------------------------ signals

// A second SIGTERM used to kill the process (a thread OpenBLAS starts
// before main() has the signals unblocked): every stream ended UNAVAILABLE
// "Socket closed" and the exit status was 143. Now the second signal cuts
// the drain short: each stream ends OK (FINISH_REASON_CANCELLED with its
// text so far) and the server exits 0.
TEST(SignalsTest, SecondSigtermCutsTheDrainShortAndEveryStreamEndsCleanly) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      {"--num-slots=64", "--drain-timeout=120s", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  constexpr int kStreams = 64;
  struct Result {
    grpc::Status status;
    int tokens = 0;
    std::string text;
    v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  };
  std::vector<Result> results(kStreams);
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext context;
      auto reader = process.stub().GenerateStream(&context, LongRequest());
      v1::GenerateStreamResponse message;
      bool counted = false;
      while (reader->Read(&message)) {
        results[i].tokens += message.token_ids_size();
        results[i].text += message.text();
        results[i].finish_reason = message.finish_reason();
        if (!counted) {
          counted = true;
          started.fetch_add(1);
        }
      }
      if (!counted) started.fetch_add(1);
      results[i].status = reader->Finish();
    });
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (started.load() < kStreams && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(started.load(), kStreams);
  process.Signal(SIGTERM);
  ASSERT_TRUE(WaitForOutput(process, "draining")) << process.Output();
  process.Signal(SIGTERM);
  for (std::thread& thread : threads) thread.join();
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(results[i].status.ok())
        << "stream " << i << ": " << results[i].status.error_code() << " "
        << results[i].status.error_message();
    EXPECT_GT(results[i].tokens, 0) << "stream " << i;
    EXPECT_FALSE(results[i].text.empty()) << "stream " << i;
    EXPECT_EQ(results[i].finish_reason, v1::FINISH_REASON_CANCELLED)
        << "stream " << i;
  }
  EXPECT_EQ(process.WaitForExit(absl::Seconds(20)), 0) << process.Output();
  EXPECT_NE(process.Output().find("cutting the drain short"), std::string::npos)
      << process.Output();
}

// A SIGTERM while the model loads used to kill the process silently (exit
// 143). The load is made slow with a large mem_len (its position tables
// take about a second to build); the signal is sent as soon as the port is
// open, while the model loads.
TEST(SignalsTest, SigtermDuringTheModelLoadExitsZeroWithALogLine) {
  EditedModel model("tiny-byte", {{"mem_len", 1 << 18}});
  auto server = ServerProcess::Launch(
      {absl::StrCat("--model=", model.path()), "--listen=127.0.0.1:0",
       "--metrics-address=", "--threads=1", "--num-slots=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  ASSERT_TRUE(WaitForOutput(process, "listening on")) << process.Output();
  process.Signal(SIGTERM);
  process.Signal(SIGTERM);
  EXPECT_EQ(process.WaitForExit(absl::Seconds(20)), 0) << process.Output();
  EXPECT_NE(process.Output().find(
                "SIGTERM before the model was loaded: exiting without serving"),
            std::string::npos)
      << process.Output();
}

// A FIFO in place of config.json or model.safetensors used to hang the load
// forever (open() waited for a writer): it is refused at once as not a
// regular file.
TEST(ModelFilesTest, AFifoInPlaceOfAModelFileIsRefusedAtOnce) {
  for (const std::string file : {"config.json", "model.safetensors"}) {
    EditedModel model("tiny-byte", nlohmann::json::object());
    const std::string path = absl::StrCat(model.path(), "/", file);
    std::filesystem::remove(path);
    ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
    const auto exit =
        ServerProcess::RunToExit({absl::StrCat("--model=", model.path()),
                                  "--listen=127.0.0.1:0", "--metrics-address="},
                                 absl::Seconds(10));
    EXPECT_EQ(exit.exit_code, 1) << file << ": " << exit.output;
    EXPECT_NE(exit.output.find(absl::StrCat(file, ": is not a regular file")),
              std::string::npos)
        << exit.output;
  }
}

// ------------------------------------------------------ file descriptors

// A TCP connection to "HOST:PORT" that sends nothing; -1 on failure.
int RawConnect(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_port =
      htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &peer.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)) !=
      0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Whether the peer closed `fd` (EOF or an error, whatever it sent before)
// within `timeout`.
bool ClosedByPeer(int fd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    pollfd entry{fd, POLLIN, 0};
    const int left =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (::poll(&entry, 1, std::max(left, 1)) <= 0) continue;
    char buffer[4096];
    if (::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT) <= 0) return true;
  }
  return false;
}

v1::GetModelInfoResponse InfoWithin(ServerProcess& server,
                                    absl::Duration timeout,
                                    grpc::Status* status) {
  // A fresh channel on a new connection (channels share connections unless
  // told otherwise).
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(
      server.address(), grpc::InsecureChannelCredentials(), arguments);
  auto stub = v1::TextGeneration::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  context.set_wait_for_ready(true);
  v1::GetModelInfoResponse info;
  *status = stub->GetModelInfo(&context, {}, &info);
  return info;
}

// With a low descriptor limit, 80 plain TCP connections opened and closed
// used to leave "Failed accept4: Too many open files" in the log and no
// connection accepted for 90 s (gRPC 1.51 gives up on the listener). Now
// the server's own accept loop sheds what it cannot take and keeps going: a
// normal call succeeds within seconds.
TEST(ConnectionsTest, TheListenerRecoversAfterTheDescriptorsRunOut) {
  auto server =
      ServerProcess::Start(GoldenModel("tiny-byte"), {}, absl::Seconds(20),
                           {{RLIMIT_NOFILE, 64, 64}});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  std::vector<int> connections;
  for (int i = 0; i < 80; ++i) {
    const int fd = RawConnect(process.address());
    if (fd >= 0) connections.push_back(fd);
  }
  // Held past gRPC's accept retry.
  absl::SleepFor(absl::Seconds(2));
  for (int fd : connections) ::close(fd);
  grpc::Status status;
  InfoWithin(process, absl::Seconds(10), &status);
  EXPECT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message() << "\n"
                           << process.Output();
}

// Connections that never send the HTTP/2 preface are closed after
// --handshake-timeout (they were held ~120 s).
TEST(ConnectionsTest, ConnectionsWithoutAPrefaceAreClosedAfterTheTimeout) {
  auto server = ServerProcess::Start(GoldenModel("tiny-byte"),
                                     {"--handshake-timeout=1s"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int fd = RawConnect((*server)->address());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(ClosedByPeer(fd, absl::Seconds(15)));
  ::close(fd);
}

// A connection that sends the HTTP/2 client preface and an empty SETTINGS
// frame, then nothing: what a client holding connections open does.
int PrefaceConnect(const std::string& address) {
  const int fd = RawConnect(address);
  if (fd < 0) return fd;
  static constexpr char kPreface[] =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
  if (::send(fd, kPreface, sizeof(kPreface) - 1, MSG_NOSIGNAL) !=
      static_cast<ssize_t>(sizeof(kPreface) - 1)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Connections that sent the preface and then idled were held forever (20
// held 248 s): --max-connection-idle closes them.
TEST(ConnectionsTest, IdleConnectionsAreClosedAfterMaxConnectionIdle) {
  auto server = ServerProcess::Start(GoldenModel("tiny-byte"),
                                     {"--max-connection-idle=1s"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int fd = PrefaceConnect((*server)->address());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(ClosedByPeer(fd, absl::Seconds(15)));
  ::close(fd);
}

// --max-connections caps the connections open at once: the ones above it
// are closed as they arrive, the ones below it are served, and once they
// go a new client is served again.
TEST(ConnectionsTest, ConnectionsAboveMaxConnectionsAreClosedAtOnce) {
  auto server =
      ServerProcess::Start(GoldenModel("tiny-byte"), {"--max-connections=4"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  std::vector<int> connections;
  for (int i = 0; i < 10; ++i) {
    const int fd = PrefaceConnect(process.address());
    ASSERT_GE(fd, 0);
    connections.push_back(fd);
    absl::SleepFor(absl::Milliseconds(20));
  }
  int closed = 0;
  for (int fd : connections) closed += ClosedByPeer(fd, absl::Seconds(1));
  // The test's own stub connection counts too.
  EXPECT_GE(closed, 6);
  EXPECT_LE(closed, 7);
  EXPECT_NE(process.Output().find("--max-connections=4"), std::string::npos)
      << process.Output();
  for (int fd : connections) ::close(fd);
  grpc::Status status;
  InfoWithin(process, absl::Seconds(10), &status);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// ---------------------------------------------------------- unread streams

// A stream whose client never read used to hold its output without limit
// (+87 MB per 32 streams). Past --max-pending-output-bytes the request is
// stopped (its slot freed: nothing more is produced) and the stream ends
// with RESOURCE_EXHAUSTED naming the flag.
TEST(UnreadStreamsTest, AStreamNeverReadIsStoppedWithResourceExhausted) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      {"--num-slots=2", "--max-pending-output-bytes=65536", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  grpc::ClientContext context;
  v1::GenerateRequest request = LongRequest();
  request.set_top_logprobs(20);  // about 250 bytes a token
  auto reader = process.stub().GenerateStream(&context, request);
  // Not read: the flow-control windows fill, then the server's queue. Under
  // ASan the tokens that fill them take about 25 s on a loaded 2-core
  // machine, hence the longer wait there.
  const absl::Time deadline =
      absl::Now() + (kSanitizerBuild ? absl::Seconds(150) : absl::Seconds(25));
  bool freed = false;
  absl::SleepFor(absl::Milliseconds(200));
  while (!freed && absl::Now() < deadline) {
    v1::GetModelInfoResponse info;
    grpc::ClientContext info_context;
    ASSERT_TRUE(process.stub().GetModelInfo(&info_context, {}, &info).ok());
    freed = info.busy_slots() == 0;
    if (!freed) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(freed) << "the unread stream still generates";
  // Not stopped: end it, rather than read its whole long generation.
  if (!freed) context.TryCancel();
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
  EXPECT_NE(status.error_message().find("--max-pending-output-bytes"),
            std::string::npos)
      << status.error_message();
}

// ------------------------------------------------------- model limits

// mem_len = 2^24 used to be accepted and 25.8 GB of position tables built
// before anything checked (std::bad_alloc, exit 134 under a 4 GB cap). Every
// size key is bounded, and what a model needs as a whole is checked against
// what the process may allocate before anything big is allocated.
TEST(ModelLimitsTest, AModelTooBigForTheProcessFailsAtLoadNamingTheLimit) {
  {
    EditedModel model("tiny-byte", {{"mem_len", 1 << 24}});
    const auto exit = ServerProcess::RunToExit(
        {absl::StrCat("--model=", model.path()), "--listen=127.0.0.1:0",
         "--metrics-address="});
    EXPECT_EQ(exit.exit_code, 1) << exit.output;
    EXPECT_NE(exit.output.find("\"mem_len\" must be at most 1048576"),
              std::string::npos)
        << exit.output;
  }
  if (kSanitizerBuild) {
    GTEST_SKIP() << "RLIMIT_AS cannot be set under ASan/TSan (their shadow "
                    "memory reserves terabytes of address space)";
  }
  {
    // Allowed by the bounds, but two slots of it take 4.3 GB.
    EditedModel model("tiny-byte", {{"mem_len", 1 << 20}});
    const auto exit = ServerProcess::RunToExit(
        {absl::StrCat("--model=", model.path()), "--listen=127.0.0.1:0",
         "--metrics-address=", "--threads=1", "--num-slots=2"},
        absl::Seconds(20), {{RLIMIT_AS, rlim_t{3} << 30, rlim_t{3} << 30}});
    EXPECT_EQ(exit.exit_code, 1) << exit.output;
    EXPECT_NE(exit.output.find("the model needs about"), std::string::npos)
        << exit.output;
    EXPECT_NE(exit.output.find("RLIMIT_AS"), std::string::npos) << exit.output;
    EXPECT_NE(exit.output.find("mem_len = 1048576"), std::string::npos)
        << exit.output;
  }
}

// e_scale = ±1e308 passed validation (Generate then failed INTERNAL, Score
// gave a NaN total).
TEST(ModelLimitsTest, AnOutOfRangeEScaleIsRefusedAtLoad) {
  for (const double scale : {1e308, -1e308}) {
    EditedModel model("tiny-byte", {{"e_scale", scale}});
    const auto exit = ServerProcess::RunToExit(
        {absl::StrCat("--model=", model.path()), "--listen=127.0.0.1:0",
         "--metrics-address="});
    EXPECT_EQ(exit.exit_code, 1) << exit.output;
    EXPECT_NE(exit.output.find("\"e_scale\" must be a finite number in"),
              std::string::npos)
        << exit.output;
  }
}

// ----------------------------------------------------- request limits

// Tokenize and Detokenize had no size limit (60 MB of text: +570 MB; 60 M
// ids: 30 s of CPU). They apply the prompt limits, every method has
// --max-request-bytes, and GetModelInfo reports all of them.
TEST(RequestLimitsTest, TokenizeDetokenizeAndMessageSizeAreBounded) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      {"--max-prompt-tokens=16", "--max-new-tokens-limit=16",
       "--max-request-bytes=4096", "--max-pending-output-bytes=65536",
       "--max-connections=50", "--max-concurrent-streams=7"});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  {
    v1::TokenizeRequest request;
    request.set_text(std::string(100, 'a'));
    v1::TokenizeResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("--max-prompt-tokens"),
              std::string::npos)
        << status.error_message();
  }
  {
    v1::TokenizeRequest request;
    request.set_text(std::string(15, 'a'));  // 16 with the eos prefix
    v1::TokenizeResponse response;
    grpc::ClientContext context;
    EXPECT_TRUE(process.stub().Tokenize(&context, request, &response).ok());
    EXPECT_EQ(response.token_ids_size(), 16);
  }
  {
    v1::DetokenizeRequest request;
    for (int i = 0; i < 33; ++i) request.add_token_ids(100);
    v1::DetokenizeResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Detokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("token_ids has 33 ids"),
              std::string::npos)
        << status.error_message();
  }
  {
    v1::TokenizeRequest request;
    request.set_text(std::string(5000, 'a'));  // over --max-request-bytes
    v1::TokenizeResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
  }
  v1::GetModelInfoResponse info;
  grpc::ClientContext context;
  ASSERT_TRUE(process.stub().GetModelInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.limits().max_request_bytes(), 4096);
  EXPECT_EQ(info.limits().max_pending_output_bytes(), 65536);
  EXPECT_EQ(info.limits().max_connections(), 50);
  EXPECT_EQ(info.limits().max_concurrent_streams(), 7);
  EXPECT_EQ(info.limits().max_detokenize_tokens(), 32);
  EXPECT_EQ(info.limits().max_prompt_tokens(), 16);
}

// ------------------------------------------------------- malformed input

// Invalid UTF-8 in a proto3 string field used to fail with UNIMPLEMENTED ""
// (the callback API's answer to any parse failure) and a 218-byte protobuf
// error in the log per request. Now: INVALID_ARGUMENT naming the field,
// and the log line at most once per interval.
TEST(MalformedRequestsTest,
     InvalidUtf8InAStringFieldIsInvalidArgumentNamingIt) {
  auto server = ServerProcess::Start(GoldenModel("tiny-byte"), {});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  const std::string bad = "ab\xff\xfe";
  for (int i = 0; i < 50; ++i) {
    v1::GenerateRequest request;
    request.set_text(bad);
    request.set_max_new_tokens(2);
    v1::GenerateResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Generate(&context, request, &response);
    ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << status.error_message();
    EXPECT_NE(status.error_message().find("tvq.v1.GenerateRequest.text"),
              std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find("UTF-8"), std::string::npos)
        << status.error_message();
  }
  {
    v1::ScoreRequest request;
    request.set_request_id(bad);
    request.set_text("hello");
    v1::ScoreResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Score(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("tvq.v1.ScoreRequest.request_id"),
              std::string::npos)
        << status.error_message();
  }
  {
    v1::TokenizeRequest request;
    request.set_text(bad);
    v1::TokenizeResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext context;
    v1::GenerateRequest request;
    request.add_stop(bad);
    request.set_text("x");
    auto reader = process.stub().GenerateStream(&context, request);
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) {
    }
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("tvq.v1.GenerateRequest.stop"),
              std::string::npos)
        << status.error_message();
  }
  // The server still answers, and logged the protobuf error at most a few
  // times for 53 bad requests.
  v1::GetModelInfoResponse info;
  grpc::ClientContext context;
  EXPECT_TRUE(process.stub().GetModelInfo(&context, {}, &info).ok());
  const std::string output = process.Output();
  size_t lines = 0;
  for (size_t at = output.find("invalid UTF-8"); at != std::string::npos;
       at = output.find("invalid UTF-8", at + 1)) {
    ++lines;
  }
  EXPECT_LE(lines, 2u) << output;
}

// ------------------------------------------------------------- metrics

// A GET of `path` on "HOST:PORT"; the whole response ("" on failure).
std::string HttpGet(const std::string& address, const std::string& path) {
  const int fd = RawConnect(address);
  if (fd < 0) return "";
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return "";
  }
  std::string response;
  char buffer[8192];
  while (true) {
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, 10000) <= 0) break;
    const ssize_t count = ::recv(fd, buffer, sizeof(buffer), 0);
    if (count <= 0) break;
    response.append(buffer, static_cast<size_t>(count));
  }
  ::close(fd);
  return response;
}

// "HOST:PORT" of the metrics endpoint from the log ("metrics on
// http://HOST:PORT/metrics").
std::string MetricsAddress(ServerProcess& server) {
  const std::string output = server.Output();
  constexpr char kMarker[] = "metrics on http://";
  const size_t at = output.find(kMarker);
  if (at == std::string::npos) return "";
  const size_t begin = at + sizeof(kMarker) - 1;
  return output.substr(begin, output.find('/', begin) - begin);
}

// Expired deadlines used to be counted as code="UNIMPLEMENTED" in
// tvq_requests_total (the callback API's status for a call whose request
// never reached the handler); they are counted as what the client was
// told, DEADLINE_EXCEEDED.
TEST(MetricsCountingTest, ExpiredDeadlinesAreCountedAsDeadlineExceeded) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      {"--metrics-address=127.0.0.1:0", "--num-slots=1", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  int deadline_exceeded = 0;
  for (int i = 0; i < 60; ++i) {
    v1::GenerateResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(100 * (i % 20)));
    const grpc::Status status =
        process.stub().Generate(&context, LongRequest(), &response);
    deadline_exceeded +=
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  }
  EXPECT_GT(deadline_exceeded, 0);
  absl::SleepFor(absl::Milliseconds(300));
  const std::string metrics = HttpGet(MetricsAddress(process), "/metrics");
  ASSERT_NE(metrics.find("tvq_requests_total"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("code=\"UNIMPLEMENTED\""), std::string::npos)
      << metrics;
  // Nor was any call cancelled by its client.
  EXPECT_EQ(metrics.find("code=\"CANCELLED\""), std::string::npos) << metrics;
}

// ------------------------------------------------------- small failures

TEST(FlagsTest, BadFlagsAndArgumentsFailNamingTheProblem) {
  const std::string model = "--model=" + GoldenModel("tiny-byte");
  {
    // Used to abort with an uncaught std::system_error.
    const auto exit = ServerProcess::RunToExit({model, "--threads=100000"});
    EXPECT_EQ(exit.exit_code, 2) << exit.output;
    EXPECT_NE(exit.output.find("--threads must be <= 1024"), std::string::npos)
        << exit.output;
  }
  {
    // Used to be accepted (and serve on another port).
    const auto exit = ServerProcess::RunToExit(
        {model, "--listen=127.0.0.1:99999", "--metrics-address="});
    EXPECT_EQ(exit.exit_code, 1) << exit.output;
    EXPECT_NE(exit.output.find("--listen=127.0.0.1:99999 has port"),
              std::string::npos)
        << exit.output;
  }
  {
    // Used to be ignored silently.
    const auto exit = ServerProcess::RunToExit({model, "models/other"});
    EXPECT_EQ(exit.exit_code, 2) << exit.output;
    EXPECT_NE(exit.output.find("unexpected argument \"models/other\""),
              std::string::npos)
        << exit.output;
  }
  {
    // Used to exit 1.
    const auto exit = ServerProcess::RunToExit({"--help"});
    EXPECT_EQ(exit.exit_code, 0) << exit.output;
    EXPECT_NE(exit.output.find("max_connections"), std::string::npos)
        << exit.output;
  }
}

TEST(SmallFailuresTest, MessagesNameWhatTheyMean) {
  // --max-queue=2147483647 used to refuse every request (signed overflow).
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      {"--num-slots=1", "--max-queue=2147483647", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  {
    v1::GenerateResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Generate(&context, LongRequest(4), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.token_ids_size(), 4);
  }
  {
    // A Score with no input used to say "a prompt is required".
    v1::ScoreRequest request;
    v1::ScoreResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Score(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("text or token_ids is required"),
              std::string::npos)
        << status.error_message();
  }
}

// The queue-full message printed the slot count where it says busy slots.
TEST(SmallFailuresTest, QueueFullMessageCountsTheBusySlots) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"), {"--num-slots=2", "--max-queue=1", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>>>
      readers;
  for (int i = 0; i < 3; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    readers.push_back(
        process.stub().GenerateStream(contexts.back().get(), LongRequest()));
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    v1::GetModelInfoResponse info;
    grpc::ClientContext context;
    ASSERT_TRUE(process.stub().GetModelInfo(&context, {}, &info).ok());
    if (info.busy_slots() == 2 && info.queued_requests() == 1) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  v1::GenerateResponse response;
  grpc::ClientContext context;
  const grpc::Status status =
      process.stub().Generate(&context, LongRequest(4), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("waiting for 2 busy slots of 2"),
            std::string::npos)
      << status.error_message();
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    v1::GenerateStreamResponse message;
    while (reader->Read(&message)) {
    }
    reader->Finish();
  }
}

}  // namespace
}  // namespace tvq::testing
