// The server's life cycle and limits, each against its own tvq-server:
// cancellation frees the slot, queue full, deadlines, health and
// reflection, SIGTERM drain (to completion and cut short), start-up errors.
#include <signal.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
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

v1::GetModelInfoResponse Info(ServerProcess& server) {
  v1::GetModelInfoResponse info;
  grpc::ClientContext context;
  const grpc::Status status = server.stub().GetModelInfo(&context, {}, &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return info;
}

// Polls GetModelInfo until `done` holds; false after `timeout`.
template <typename Predicate>
bool WaitFor(ServerProcess& server, Predicate done,
             absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done(Info(server))) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return false;
}

// A stream opened and read once (so it holds a slot).
struct OpenStream {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>> reader;
  v1::GenerateStreamResponse first;
  bool started = false;

  void Open(ServerProcess& server, const v1::GenerateRequest& request,
            bool read_first = true) {
    reader = server.stub().GenerateStream(&context, request);
    if (read_first) started = reader->Read(&first);
  }
};

TEST(LifecycleTest, CancellingAStreamFreesItsSlotWithinAStep) {
  auto server = ServerProcess::Start(GoldenModel("tiny-byte"),
                                     {"--num-slots=2", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  OpenStream stream;
  stream.Open(process, LongRequest());
  ASSERT_TRUE(stream.started);
  v1::GetModelInfoResponse busy = Info(process);
  EXPECT_EQ(busy.busy_slots(), 1);
  EXPECT_EQ(busy.free_slots(), 1);

  const absl::Time cancelled = absl::Now();
  stream.context.TryCancel();
  EXPECT_TRUE(WaitFor(process, [](const v1::GetModelInfoResponse& info) {
    return info.busy_slots() == 0 && info.free_slots() == 2;
  })) << process.Output();
  // Generously bounded (one step of the tiny model is ~10 us; the bound
  // covers a loaded CI machine).
  EXPECT_LT(absl::Now() - cancelled, absl::Seconds(2));
  v1::GenerateStreamResponse message;
  while (stream.reader->Read(&message)) {
  }
  EXPECT_EQ(stream.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  // The server goes on serving.
  v1::GenerateRequest request = LongRequest(8);
  v1::GenerateResponse response;
  grpc::ClientContext context;
  EXPECT_TRUE(process.stub().Generate(&context, request, &response).ok());
  EXPECT_EQ(response.token_ids_size(), 8);
}

TEST(LifecycleTest, FullQueueRejectsAtOnceWithResourceExhausted) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"), {"--num-slots=1", "--max-queue=1", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  OpenStream running;  // holds the slot
  running.Open(process, LongRequest());
  ASSERT_TRUE(running.started);
  OpenStream waiting;  // holds the queue
  waiting.Open(process, LongRequest(), /*read_first=*/false);
  ASSERT_TRUE(WaitFor(process, [](const v1::GetModelInfoResponse& info) {
    return info.queued_requests() == 1;
  }));

  const absl::Time start = absl::Now();
  v1::GenerateResponse response;
  grpc::ClientContext context;
  const grpc::Status status =
      process.stub().Generate(&context, LongRequest(4), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
  EXPECT_NE(status.error_message().find("queue"), std::string::npos);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));

  // Freeing the slot admits the waiting stream.
  running.context.TryCancel();
  v1::GenerateStreamResponse message;
  EXPECT_TRUE(waiting.reader->Read(&message));
  waiting.context.TryCancel();
  while (waiting.reader->Read(&message)) {
  }
  EXPECT_EQ(waiting.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  while (running.reader->Read(&message)) {
  }
  running.reader->Finish();
}

TEST(LifecycleTest, DeadlinesEndRunningAndQueuedRequests) {
  auto server = ServerProcess::Start(GoldenModel("tiny-byte"),
                                     {"--num-slots=1", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  {
    // Running: the slot is freed when the deadline passes.
    v1::GenerateResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(300));
    const grpc::Status status =
        process.stub().Generate(&context, LongRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_TRUE(WaitFor(process, [](const v1::GetModelInfoResponse& info) {
      return info.busy_slots() == 0;
    }));
  }
  {
    // Queued: a request waiting behind a running one expires in the queue.
    OpenStream running;
    running.Open(process, LongRequest());
    ASSERT_TRUE(running.started);
    v1::GenerateResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(200));
    const grpc::Status status =
        process.stub().Generate(&context, LongRequest(4), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_TRUE(WaitFor(process, [](const v1::GetModelInfoResponse& info) {
      return info.queued_requests() == 0 && info.busy_slots() == 1;
    }));
    running.context.TryCancel();
    v1::GenerateStreamResponse message;
    while (running.reader->Read(&message)) {
    }
    running.reader->Finish();
  }
  // A deadline on a stream.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(300));
  auto reader = process.stub().GenerateStream(&context, LongRequest());
  v1::GenerateStreamResponse message;
  int messages = 0;
  while (reader->Read(&message)) ++messages;
  EXPECT_GT(messages, 0);
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitFor(process, [](const v1::GetModelInfoResponse& info) {
    return info.busy_slots() == 0;
  }));
}

TEST(LifecycleTest, HealthAndReflectionListTheServices) {
  TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  auto server = ServerProcess::Start(GoldenModel("tiny-tied"), {});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  EXPECT_EQ(HealthStatus(process.health(), ""), "SERVING");
  EXPECT_EQ(HealthStatus(process.health(), "tvq.v1.TextGeneration"), "SERVING");
  EXPECT_NE(HealthStatus(process.health(), "no.such.Service").find("error"),
            std::string::npos);

  auto reflection =
      grpc::reflection::v1alpha::ServerReflection::NewStub(process.channel());
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.insert(service.name());
  }
  EXPECT_TRUE(services.contains("tvq.v1.TextGeneration"));
  EXPECT_TRUE(services.contains("grpc.health.v1.Health"));
  EXPECT_TRUE(services.contains("grpc.reflection.v1alpha.ServerReflection"));

  // The API's descriptor, as grpcurl would fetch it.
  request.set_file_containing_symbol("tvq.v1.TextGeneration");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> methods;
  for (const std::string& bytes :
       response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    if (file.package() != "tvq.v1") continue;
    EXPECT_EQ(file.name(), "tvq/v1/tvq.proto");
    for (const auto& service : file.service()) {
      for (const auto& method : service.method()) methods.insert(method.name());
    }
  }
  EXPECT_EQ(methods,
            (std::set<std::string>{
                "Generate", "GenerateStream", "Score", "Tokenize",
                "Detokenize", "GetModelInfo", "CreateSession",
                "AppendToSession", "ForkSession", "ExportSession",
                "ImportSession", "GetSession", "ListSessions",
                "CloseSession"}));
  stream->WritesDone();
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());

  // SentencePiece tokenizer through the server (tiny-tied): a round trip.
  v1::TokenizeRequest tokenize;
  tokenize.set_text("hello world");
  v1::TokenizeResponse tokens;
  grpc::ClientContext tokenize_context;
  ASSERT_TRUE(
      process.stub().Tokenize(&tokenize_context, tokenize, &tokens).ok());
  ASSERT_GE(tokens.token_ids_size(), 2);
  EXPECT_EQ(tokens.token_ids(0), 1);
  v1::DetokenizeRequest detokenize;
  detokenize.mutable_token_ids()->CopyFrom(tokens.token_ids());
  v1::DetokenizeResponse text;
  grpc::ClientContext detokenize_context;
  ASSERT_TRUE(
      process.stub().Detokenize(&detokenize_context, detokenize, &text).ok());
  EXPECT_EQ(text.text(), "hello world");
}

TEST(LifecycleTest, SigtermDrainsAnInFlightStreamToCompletionAndExitsZero) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      // Far longer than the stream needs: under ASan on a loaded machine it
      // once ran past 60 s and was cut at 37,538 of its 40,000 tokens.
      {"--num-slots=4", "--drain-timeout=240s", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  // Long enough to still run while the checks below happen (tens of
  // milliseconds per thousand tokens on the tiny model), short enough for
  // the suite.
  constexpr int kTokens = 40000;
  OpenStream stream;
  stream.Open(process, LongRequest(kTokens));
  ASSERT_TRUE(stream.started);
  int received = stream.first.token_ids_size();
  // Still generating when the signal arrives.
  ASSERT_EQ(Info(process).busy_slots(), 1);

  process.Signal(SIGTERM);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (HealthStatus(process.health(), "") != "NOT_SERVING" &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(HealthStatus(process.health(), ""), "NOT_SERVING");
  EXPECT_EQ(HealthStatus(process.health(), "tvq.v1.TextGeneration"),
            "NOT_SERVING");
  // Draining, not done: the stream still holds its slot.
  EXPECT_EQ(Info(process).busy_slots(), 1);
  {
    v1::GenerateResponse response;
    grpc::ClientContext context;
    const grpc::Status status =
        process.stub().Generate(&context, LongRequest(4), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << status.error_message();
  }
  v1::GenerateStreamResponse message;
  v1::GenerateStreamResponse last;
  while (stream.reader->Read(&message)) {
    received += message.token_ids_size();
    last = message;
  }
  const grpc::Status status = stream.reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(received, kTokens);
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().generated_tokens(), kTokens);
  EXPECT_EQ(process.WaitForExit(absl::Seconds(20)), 0) << process.Output();
}

TEST(LifecycleTest, DrainTimeoutCutsStreamsShortAndStillExitsZero) {
  auto server = ServerProcess::Start(
      GoldenModel("tiny-byte"),
      {"--num-slots=2", "--drain-timeout=200ms", kLongLimit});
  ASSERT_TRUE(server.ok()) << server.status();
  ServerProcess& process = **server;
  OpenStream stream;
  stream.Open(process, LongRequest());
  ASSERT_TRUE(stream.started);
  process.Signal(SIGTERM);
  v1::GenerateStreamResponse message;
  v1::GenerateStreamResponse last;
  while (stream.reader->Read(&message)) last = message;
  const grpc::Status status = stream.reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_GT(last.usage().generated_tokens(), 0);
  EXPECT_EQ(process.WaitForExit(absl::Seconds(20)), 0) << process.Output();
}

TEST(LifecycleTest, BadFlagsAndModelsFailAtStartNamingTheProblem) {
  const std::string model = "--model=" + GoldenModel("tiny-byte");
  {
    const auto exit = ServerProcess::RunToExit({model, "--num-slots=-1"});
    EXPECT_EQ(exit.exit_code, 2);
    EXPECT_NE(exit.output.find("--num-slots"), std::string::npos)
        << exit.output;
  }
  {
    const auto exit = ServerProcess::RunToExit({model, "--max-queue=0"});
    EXPECT_EQ(exit.exit_code, 2);
    EXPECT_NE(exit.output.find("--max-queue"), std::string::npos)
        << exit.output;
  }
  {
    const auto exit = ServerProcess::RunToExit({model, "--no-such-flag=1"});
    EXPECT_NE(exit.exit_code, 0);
    EXPECT_NE(exit.output.find("no_such_flag"), std::string::npos)
        << exit.output;
  }
  {
    const auto exit = ServerProcess::RunToExit({model, "--threads=many"});
    EXPECT_NE(exit.exit_code, 0);
    EXPECT_NE(exit.output.find("threads"), std::string::npos) << exit.output;
  }
  {
    const auto exit = ServerProcess::RunToExit(
        {model, "--listen=127.0.0.1:0", "--device=tpu"});
    EXPECT_EQ(exit.exit_code, 1);
    EXPECT_NE(exit.output.find("--device"), std::string::npos) << exit.output;
  }
  {
    const auto exit = ServerProcess::RunToExit(
        {"--model=/nonexistent/model", "--listen=127.0.0.1:0"});
    EXPECT_EQ(exit.exit_code, 1);
    EXPECT_NE(exit.output.find("/nonexistent/model"), std::string::npos)
        << exit.output;
  }
  {
    const auto exit = ServerProcess::RunToExit(
        {model, "--listen=not-an-address", "--metrics-address="});
    EXPECT_EQ(exit.exit_code, 1);
    EXPECT_NE(exit.output.find("--listen"), std::string::npos) << exit.output;
  }
}

}  // namespace
}  // namespace tvq::testing
