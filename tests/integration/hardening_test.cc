// Regression tests for the failures an adversarial test found (issue 15):
// each runs the real tvq-server and does what a hostile client or operator
// did, then checks that the server answers as documented
// (docs/security.md).
#include <signal.h>
#include <sys/stat.h>

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
      std::filesystem::copy(entry.path(),
                            directory_ / entry.path().filename());
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
  EXPECT_NE(process.Output().find("cutting the drain short"),
            std::string::npos)
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
    const auto exit = ServerProcess::RunToExit(
        {absl::StrCat("--model=", model.path()), "--listen=127.0.0.1:0",
         "--metrics-address="},
        absl::Seconds(10));
    EXPECT_EQ(exit.exit_code, 1) << file << ": " << exit.output;
    EXPECT_NE(exit.output.find(absl::StrCat(file, ": is not a regular file")),
              std::string::npos)
        << exit.output;
  }
}

}  // namespace
}  // namespace tvq::testing
