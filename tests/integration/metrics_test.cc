// Prometheus metrics of the real tvq-server on the tiny-byte golden model,
// driven by a real gRPC client: after known requests the counters and
// histogram counts moved by exactly the expected amounts; promtool accepts
// the scrape; a real Prometheus server scrapes the server and its query API
// returns tvq_generated_tokens_total > 0. A metrics port that cannot be
// bound stops the server with a clear error.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/metrics_scrape.h"
#include "tests/integration/server_process.h"
#include "tests/metrics/child_process.h"
#include "tests/metrics/prometheus_text.h"

namespace tvq::testing {
namespace {

constexpr int kSlots = 4;
// Far more tokens than the server makes before a client's cancel arrives.
constexpr int kCancelledTokens = 1000000;
constexpr char kPromtool[] = "/usr/bin/promtool";
constexpr char kPrometheus[] = "/usr/bin/prometheus";

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(30);
}

v1::GenerateRequest Greedy(const std::string& text, int max_new_tokens) {
  v1::GenerateRequest request;
  request.set_text(text);
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_eos(true);
  request.set_temperature(0);
  return request;
}

class MetricsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(
            GoldenModel("tiny-byte"),
            {"--metrics-address=127.0.0.1:0",
             absl::StrCat("--num-slots=", kSlots),
             absl::StrCat("--max-new-tokens-limit=", kCancelledTokens)});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    url_ = new std::string(MetricsUrl(server_->Output()));
    ASSERT_FALSE(url_->empty()) << server_->Output();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete url_;
    url_ = nullptr;
  }

  static absl::StatusOr<std::string> ScrapeText() {
    absl::StatusOr<HttpResponse> response = HttpGetUrl(*url_);
    if (!response.ok()) return response.status();
    if (response->status != 200) {
      return absl::InternalError(
          absl::StrCat("GET ", *url_, ": HTTP ", response->status));
    }
    return response->body;
  }
  static Scrape ScrapeNow() {
    absl::StatusOr<std::string> text = ScrapeText();
    EXPECT_TRUE(text.ok()) << text.status();
    if (!text.ok()) return Scrape();
    absl::StatusOr<Scrape> scrape = Scrape::Parse(*text);
    EXPECT_TRUE(scrape.ok()) << scrape.status();
    return scrape.ok() ? *std::move(scrape) : Scrape();
  }
  // Scrapes until every slot is free again (slots are released at the end
  // of the scheduler step that answered the last request).
  static Scrape ScrapeWhenIdle() {
    const absl::Time limit = absl::Now() + absl::Seconds(10);
    while (true) {
      Scrape scrape = ScrapeNow();
      if (scrape.Value("tvq_requests_running") == 0 || absl::Now() > limit) {
        return scrape;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  static ServerProcess* server_;
  static std::string* url_;
};

ServerProcess* MetricsTest::server_ = nullptr;
std::string* MetricsTest::url_ = nullptr;

// Every histogram: cumulative buckets never decrease and +Inf == _count.
void ExpectConsistentHistograms(const Scrape& scrape) {
  std::map<std::string, std::vector<const MetricSample*>> buckets;
  for (const MetricSample& sample : scrape.samples()) {
    if (!absl::EndsWith(sample.name, "_bucket")) continue;
    MetricLabels series = sample.labels;
    series.erase("le");
    std::string key = sample.name;
    for (const auto& [name, value] : series) {
      absl::StrAppend(&key, ",", name, "=", value);
    }
    buckets[key].push_back(&sample);
  }
  EXPECT_FALSE(buckets.empty());
  for (const auto& [key, samples] : buckets) {
    double previous = 0;
    for (const MetricSample* sample : samples) {
      EXPECT_GE(sample->value, previous)
          << key << " le=" << sample->labels.at("le");
      previous = sample->value;
    }
    const MetricSample& last = *samples.back();
    ASSERT_EQ(last.labels.at("le"), "+Inf") << key;
    MetricLabels labels = last.labels;
    labels.erase("le");
    const std::string base = last.name.substr(0, last.name.size() - 7);
    EXPECT_EQ(scrape.Value(base + "_count", labels), last.value) << key;
  }
}

TEST_F(MetricsTest, CountersAndHistogramsMoveByExactlyTheRequestsSent) {
  v1::TextGeneration::Stub& stub = server_->stub();
  const Scrape before = ScrapeWhenIdle();

  // 5 unary generations of 6 tokens, 3 streamed generations of 4 tokens,
  // 2 scores, 1 invalid generation, 1 Tokenize, 1 GetModelInfo.
  constexpr int kUnary = 5, kUnaryTokens = 6, kStreams = 3, kStreamTokens = 4,
                kScores = 2;
  int prompt_tokens = 0, generated_tokens = 0, score_tokens = 0;
  for (int i = 0; i < kUnary; ++i) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::GenerateResponse response;
    const grpc::Status status = stub.Generate(
        &context, Greedy(std::string(3 + 5 * i, 'a' + i), kUnaryTokens),
        &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.usage().generated_tokens(), kUnaryTokens);
    prompt_tokens += response.usage().prompt_tokens();
    generated_tokens += response.usage().generated_tokens();
  }
  for (int i = 0; i < kStreams; ++i) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto reader = stub.GenerateStream(
        &context, Greedy(absl::StrCat("stream ", i), kStreamTokens));
    v1::GenerateStreamResponse message;
    v1::Usage usage;
    while (reader->Read(&message)) {
      if (message.has_usage()) usage = message.usage();
    }
    const grpc::Status status = reader->Finish();
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(usage.generated_tokens(), kStreamTokens);
    prompt_tokens += usage.prompt_tokens();
    generated_tokens += usage.generated_tokens();
  }
  for (int i = 0; i < kScores; ++i) {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::ScoreRequest request;
    request.set_text(absl::StrCat("score me ", i));
    v1::ScoreResponse response;
    const grpc::Status status = stub.Score(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    score_tokens += response.usage().prompt_tokens();
  }
  {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::GenerateResponse response;
    const grpc::Status status =
        stub.Generate(&context, Greedy("x", /*max_new_tokens=*/0), &response);
    ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::GetModelInfoResponse info;
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text("abc");
    v1::TokenizeResponse tokens;
    ASSERT_TRUE(stub.Tokenize(&context, request, &tokens).ok());
    grpc::ClientContext info_context;
    ASSERT_TRUE(
        stub.GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info)
            .ok());
  }
  ASSERT_EQ(generated_tokens, kUnary * kUnaryTokens + kStreams * kStreamTokens);

  const Scrape after = ScrapeWhenIdle();
  auto delta = [&](const std::string& name, const MetricLabels& labels = {}) {
    return after.Value(name, labels) - before.Value(name, labels);
  };
  auto requests = [&](const char* method, const char* code) {
    return delta("tvq_requests_total", {{"method", method}, {"code", code}});
  };
  EXPECT_EQ(requests("Generate", "OK"), kUnary);
  EXPECT_EQ(after.Value("tvq_requests_total", {{"method", "Generate"},
                                               {"code", "INVALID_ARGUMENT"}}) -
                before
                    .Find("tvq_requests_total", {{"method", "Generate"},
                                                 {"code", "INVALID_ARGUMENT"}})
                    .value_or(0),
            1);
  EXPECT_EQ(requests("GenerateStream", "OK"), kStreams);
  EXPECT_EQ(requests("Score", "OK"), kScores);
  EXPECT_EQ(requests("Tokenize", "OK"), 1);
  EXPECT_EQ(requests("GetModelInfo", "OK"), 1);
  EXPECT_EQ(after.Sum("tvq_requests_total") - before.Sum("tvq_requests_total"),
            kUnary + 1 + kStreams + kScores + 2);

  // The invalid request never reached the scheduler.
  const int generations = kUnary + kStreams;
  EXPECT_EQ(delta("tvq_requests_finished_total",
                  {{"kind", "generate"}, {"reason", "length"}}),
            generations);
  EXPECT_EQ(delta("tvq_requests_finished_total",
                  {{"kind", "score"}, {"reason", "complete"}}),
            kScores);
  EXPECT_EQ(after.Sum("tvq_requests_finished_total") -
                before.Sum("tvq_requests_finished_total"),
            generations + kScores);

  EXPECT_EQ(delta("tvq_generated_tokens_total"), generated_tokens);
  EXPECT_EQ(delta("tvq_prompt_tokens_total"), prompt_tokens + score_tokens);
  // Every generation produced tokens: one first token each, the rest are
  // inter-token gaps, each one sequence's share of a batched decode step.
  EXPECT_EQ(delta("tvq_time_to_first_token_seconds_count"), generations);
  EXPECT_EQ(delta("tvq_inter_token_latency_seconds_count"),
            generated_tokens - generations);
  EXPECT_EQ(delta("tvq_batch_size_sum"), generated_tokens - generations);
  EXPECT_EQ(delta("tvq_step_duration_seconds_count", {{"phase", "decode"}}),
            delta("tvq_batch_size_count"));
  EXPECT_GE(delta("tvq_step_duration_seconds_count", {{"phase", "prefill"}}),
            generations + kScores);
  EXPECT_EQ(delta("tvq_decode_duration_seconds_count"), generations);
  EXPECT_EQ(delta("tvq_request_generated_tokens_count"), generations);
  EXPECT_EQ(delta("tvq_request_generated_tokens_sum"), generated_tokens);
  EXPECT_EQ(delta("tvq_request_prompt_tokens_sum", {{"kind", "generate"}}),
            prompt_tokens);
  EXPECT_EQ(delta("tvq_request_prompt_tokens_sum", {{"kind", "score"}}),
            score_tokens);
  for (const auto& [kind, count] : std::vector<std::pair<std::string, int>>{
           {"generate", generations}, {"score", kScores}}) {
    EXPECT_EQ(delta("tvq_request_duration_seconds_count", {{"kind", kind}}),
              count)
        << kind;
    EXPECT_EQ(delta("tvq_queue_wait_seconds_count", {{"kind", kind}}), count)
        << kind;
    EXPECT_EQ(delta("tvq_prefill_duration_seconds_count", {{"kind", kind}}),
              count)
        << kind;
  }
  EXPECT_GT(delta("tvq_time_to_first_token_seconds_sum"), 0);
  ExpectConsistentHistograms(after);

  // Gauges once idle, against what GetModelInfo reports.
  EXPECT_EQ(after.Value("tvq_queue_length"), 0);
  EXPECT_EQ(after.Value("tvq_requests_running"), 0);
  EXPECT_EQ(after.Value("tvq_slots", {{"state", "free"}}), kSlots);
  EXPECT_EQ(after.Value("tvq_slots", {{"state", "busy"}}), 0);
  EXPECT_EQ(after.Value("tvq_state_utilization_ratio"), 0);
  EXPECT_EQ(after.Value("tvq_state_bytes_per_sequence"),
            info.state_bytes_per_sequence());
  EXPECT_EQ(after.Value("tvq_state_memory_bytes", {{"state", "reserved"}}),
            static_cast<double>(kSlots) * info.state_bytes_per_sequence());
  EXPECT_EQ(after.Value("tvq_build_info", {{"version", info.server_version()},
                                           {"backend", info.backend()},
                                           {"device", info.device()}}),
            1);
  EXPECT_EQ(after.Sum("tvq_model_info"), 1);
  for (const MetricSample& sample : after.samples()) {
    if (sample.name != "tvq_model_info") continue;
    EXPECT_EQ(sample.labels.at("n_vocab"),
              absl::StrCat(info.model_config().n_vocab()));
    EXPECT_EQ(sample.labels.at("path"), info.model_path());
  }
  // Process metrics of the server process.
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  EXPECT_LE(after.Value("process_start_time_seconds"), now + 1);
  EXPECT_GT(after.Value("process_start_time_seconds"), now - 600);
  EXPECT_GT(after.Value("process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(after.Value("process_virtual_memory_bytes"),
            after.Value("process_resident_memory_bytes"));
  EXPECT_GT(after.Value("process_open_fds"), 3);
  EXPECT_GE(after.Value("process_max_fds"), after.Value("process_open_fds"));
  EXPECT_GT(after.Value("process_cpu_seconds_total"), 0);
}

TEST_F(MetricsTest, AClientCancelIsCountedAsCancelled) {
  const Scrape before = ScrapeWhenIdle();
  {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    auto reader = server_->stub().GenerateStream(
        &context, Greedy("cancel me", kCancelledTokens));
    v1::GenerateStreamResponse message;
    ASSERT_TRUE(reader->Read(&message));
    context.TryCancel();
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The server ends the request at its next step: the scheduler counts it
  // (finished, reason cancelled), then the service sends the status (the
  // RPC counter); poll until both moved.
  auto cancelled = [](const Scrape& scrape) {
    return scrape.Value("tvq_requests_finished_total",
                        {{"kind", "generate"}, {"reason", "cancelled"}});
  };
  auto cancelled_rpcs = [](const Scrape& scrape) {
    return scrape
        .Find("tvq_requests_total",
              {{"method", "GenerateStream"}, {"code", "CANCELLED"}})
        .value_or(0);
  };
  const absl::Time limit = absl::Now() + absl::Seconds(10);
  Scrape after = ScrapeWhenIdle();
  while ((cancelled(after) == cancelled(before) ||
          cancelled_rpcs(after) == cancelled_rpcs(before)) &&
         absl::Now() < limit) {
    absl::SleepFor(absl::Milliseconds(10));
    after = ScrapeWhenIdle();
  }
  EXPECT_EQ(cancelled(after) - cancelled(before), 1);
  EXPECT_EQ(cancelled_rpcs(after) - cancelled_rpcs(before), 1);
  // Whatever it generated before the cancel is counted once, both ways.
  const double generated = after.Value("tvq_generated_tokens_total") -
                           before.Value("tvq_generated_tokens_total");
  EXPECT_GE(generated, 1);
  EXPECT_EQ(after.Value("tvq_request_generated_tokens_sum") -
                before.Value("tvq_request_generated_tokens_sum"),
            generated);
  EXPECT_EQ(after.Value("tvq_requests_running"), 0);
}

TEST_F(MetricsTest, PromtoolAcceptsTheScrape) {
  {
    // Something in every histogram.
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::GenerateResponse response;
    ASSERT_TRUE(server_->stub()
                    .Generate(&context, Greedy("promtool", 3), &response)
                    .ok());
  }
  absl::StatusOr<std::string> text = ScrapeText();
  ASSERT_TRUE(text.ok()) << text.status();
  absl::StatusOr<TempDirectory> directory = TempDirectory::Create();
  ASSERT_TRUE(directory.ok()) << directory.status();
  absl::StatusOr<std::string> path = directory->WriteFile("scrape.txt", *text);
  ASSERT_TRUE(path.ok()) << path.status();
  absl::StatusOr<CommandResult> result =
      RunCommand({kPromtool, "check", "metrics"}, *path);
  ASSERT_TRUE(result.ok()) << result.status();
  // Exit 0 and no lint remark at all.
  EXPECT_EQ(result->exit_code, 0) << result->output;
  EXPECT_EQ(result->output, "") << result->output;
}

// Polls Prometheus's instant-query API until `query` returns a sample whose
// value is > 0; returns that value (or the last problem).
absl::StatusOr<double> QueryUntilPositive(int port, const std::string& query,
                                          absl::Duration timeout) {
  const absl::Time limit = absl::Now() + timeout;
  std::string last = "no answer yet";
  while (absl::Now() < limit) {
    absl::StatusOr<HttpResponse> response =
        HttpGet("127.0.0.1", port, absl::StrCat("/api/v1/query?query=", query));
    if (!response.ok()) {
      last = response.status().ToString();
    } else {
      last = absl::StrCat("HTTP ", response->status, ": ", response->body);
      const nlohmann::json body = nlohmann::json::parse(
          response->body, nullptr, /*allow_exceptions=*/false);
      if (response->status == 200 && body.is_object() &&
          body.value("status", "") == "success") {
        const nlohmann::json& result = body["data"]["result"];
        if (result.is_array() && !result.empty()) {
          double value = 0;
          const std::string text = result[0]["value"][1].get<std::string>();
          if (absl::SimpleAtod(text, &value) && value > 0) return value;
        }
      }
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("query ", query, " never returned a value > 0: ", last));
}

TEST_F(MetricsTest, ARealPrometheusScrapesTheServer) {
  {
    grpc::ClientContext context;
    context.set_deadline(Deadline());
    v1::GenerateResponse response;
    ASSERT_TRUE(server_->stub()
                    .Generate(&context, Greedy("prometheus", 5), &response)
                    .ok());
  }
  absl::StatusOr<TempDirectory> directory = TempDirectory::Create();
  ASSERT_TRUE(directory.ok()) << directory.status();
  const std::string target =
      url_->substr(std::string("http://").size(),
                   url_->find("/metrics") - std::string("http://").size());
  absl::StatusOr<std::string> config = directory->WriteFile(
      "prometheus.yml", absl::StrCat("global:\n"
                                     "  scrape_interval: 1s\n"
                                     "  evaluation_interval: 1s\n"
                                     "scrape_configs:\n"
                                     "  - job_name: tvq\n"
                                     "    metrics_path: /metrics\n"
                                     "    static_configs:\n"
                                     "      - targets: ['",
                                     target, "']\n"));
  ASSERT_TRUE(config.ok()) << config.status();

  // The port is free a moment before Prometheus binds it; retry if another
  // process took it in between.
  std::optional<ChildProcess> prometheus;
  int port = 0;
  for (int attempt = 0; attempt < 3 && !prometheus.has_value(); ++attempt) {
    absl::StatusOr<int> free_port = FreeLoopbackPort();
    ASSERT_TRUE(free_port.ok()) << free_port.status();
    port = *free_port;
    absl::StatusOr<ChildProcess> child = ChildProcess::Start(
        {kPrometheus, absl::StrCat("--config.file=", *config),
         absl::StrCat("--storage.tsdb.path=", directory->path(), "/data"),
         absl::StrCat("--web.listen-address=127.0.0.1:", port),
         "--log.level=warn"},
        "", absl::StrCat(directory->path(), "/prometheus.log"));
    ASSERT_TRUE(child.ok()) << child.status();
    // Up when its readiness endpoint answers 200; gone if it exited.
    const absl::Time limit = absl::Now() + absl::Seconds(20);
    while (absl::Now() < limit) {
      if (child->Wait(absl::ZeroDuration()).has_value()) break;
      absl::StatusOr<HttpResponse> ready =
          HttpGet("127.0.0.1", port, "/-/ready", absl::Seconds(2));
      if (ready.ok() && ready->status == 200) {
        prometheus.emplace(*std::move(child));
        break;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    if (!prometheus.has_value()) {
      ADD_FAILURE() << "prometheus did not become ready (attempt "
                    << attempt + 1 << "):\n"
                    << child->Output();
    }
  }
  ASSERT_TRUE(prometheus.has_value());

  absl::StatusOr<double> generated =
      QueryUntilPositive(port, "tvq_generated_tokens_total", absl::Seconds(30));
  EXPECT_TRUE(generated.ok()) << generated.status() << "\n"
                              << prometheus->Output();
  if (generated.ok()) {
    EXPECT_GE(*generated, 5);
  }

  // The target is healthy: Prometheus parsed the whole scrape.
  absl::StatusOr<HttpResponse> targets =
      HttpGet("127.0.0.1", port, "/api/v1/targets?state=active");
  ASSERT_TRUE(targets.ok()) << targets.status();
  const nlohmann::json body =
      nlohmann::json::parse(targets->body, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(body.is_object()) << targets->body;
  const nlohmann::json& active = body["data"]["activeTargets"];
  ASSERT_TRUE(active.is_array() && active.size() == 1) << targets->body;
  EXPECT_EQ(active[0].value("health", ""), "up") << targets->body;
  EXPECT_EQ(active[0].value("lastError", "?"), "") << targets->body;

  // A histogram query works end to end too.
  absl::StatusOr<double> ttft_count = QueryUntilPositive(
      port, "tvq_time_to_first_token_seconds_count", absl::Seconds(10));
  EXPECT_TRUE(ttft_count.ok()) << ttft_count.status();
  prometheus->Stop();
}

TEST(MetricsStartupTest, ATakenMetricsPortStopsTheServerWithAClearError) {
  // Hold a listening socket on a loopback port.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  ASSERT_EQ(listen(fd, 1), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string taken = absl::StrCat("127.0.0.1:", ntohs(address.sin_port));

  const ServerProcess::Exit exit = ServerProcess::RunToExit(
      {absl::StrCat("--model=", GoldenModel("tiny-byte")),
       "--listen=127.0.0.1:0", absl::StrCat("--metrics-address=", taken)});
  close(fd);
  EXPECT_EQ(exit.exit_code, 1) << exit.output;
  EXPECT_TRUE(absl::StrContains(exit.output, taken)) << exit.output;
  EXPECT_TRUE(absl::StrContains(exit.output, "Address already in use"))
      << exit.output;
}

TEST(MetricsStartupTest, AMalformedMetricsAddressIsNamed) {
  const ServerProcess::Exit exit = ServerProcess::RunToExit(
      {absl::StrCat("--model=", GoldenModel("tiny-byte")),
       "--listen=127.0.0.1:0", "--metrics-address=127.0.0.1:metrics"});
  EXPECT_EQ(exit.exit_code, 2) << exit.output;  // a flag error
  EXPECT_TRUE(absl::StrContains(exit.output, "127.0.0.1:metrics"))
      << exit.output;
  EXPECT_TRUE(absl::StrContains(exit.output, "HOST:PORT")) << exit.output;
}

}  // namespace
}  // namespace tvq::testing
