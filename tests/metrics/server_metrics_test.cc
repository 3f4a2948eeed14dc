// ServerMetrics without a server: the families and their names, per-RPC
// counts, info gauges, scrape-time engine gauges, the outcome -> reason map.
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "server/metrics/http_metrics.h"
#include "server/metrics/metrics.h"
#include "server/metrics/scheduler_metrics_observer.h"
#include "tests/metrics/prometheus_text.h"

namespace tvq::metrics {
namespace {

using scheduler::RequestKind;
using scheduler::RequestOutcome;
using testing::Scrape;

class ServerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
        ServerMetrics::Create();
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = *std::move(metrics);
  }
  Scrape Collect() const {
    absl::StatusOr<Scrape> scrape = Scrape::Parse(metrics_->SerializeText());
    EXPECT_TRUE(scrape.ok()) << scrape.status();
    return scrape.ok() ? *std::move(scrape) : Scrape();
  }
  std::unique_ptr<ServerMetrics> metrics_;
};

TEST_F(ServerMetricsTest, FamiliesFollowPrometheusNaming) {
  // Info gauges have no series until they are set.
  ASSERT_TRUE(metrics_->SetBuildInfo({"0.1.0", "cpu", "cpu"}).ok());
  ASSERT_TRUE(metrics_->SetModelInfo(ModelInfo()).ok());
  const std::string text = metrics_->SerializeText();
  std::set<std::string> families;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, "# TYPE ")) continue;
    const std::vector<std::string> parts = absl::StrSplit(line, ' ');
    ASSERT_EQ(parts.size(), 2u) << line;
    EXPECT_TRUE(families.insert(parts[0]).second) << "twice: " << parts[0];
    if (parts[1] == "counter") {
      EXPECT_TRUE(absl::EndsWith(parts[0], "_total")) << parts[0];
    } else {
      EXPECT_FALSE(absl::EndsWith(parts[0], "_total")) << parts[0];
    }
    if (parts[1] == "histogram" && !absl::StrContains(parts[0], "tokens") &&
        parts[0] != "tvq_batch_size") {
      EXPECT_TRUE(absl::EndsWith(parts[0], "_seconds")) << parts[0];
    }
    EXPECT_NE(text.find("# HELP " + parts[0] + " "), std::string::npos)
        << parts[0];
  }
  for (const char* name : {"tvq_requests_total",
                           "tvq_requests_finished_total",
                           "tvq_time_to_first_token_seconds",
                           "tvq_inter_token_latency_seconds",
                           "tvq_request_duration_seconds",
                           "tvq_queue_wait_seconds",
                           "tvq_prefill_duration_seconds",
                           "tvq_prompt_tokens_total",
                           "tvq_generated_tokens_total",
                           "tvq_request_prompt_tokens",
                           "tvq_request_generated_tokens",
                           "tvq_batch_size",
                           "tvq_step_duration_seconds",
                           "tvq_build_info",
                           "tvq_model_info",
                           "process_cpu_seconds_total",
                           "process_resident_memory_bytes",
                           "process_virtual_memory_bytes",
                           "process_open_fds",
                           "process_max_fds",
                           "process_start_time_seconds"}) {
    EXPECT_TRUE(families.contains(name)) << name;
  }
  // Buckets run from sub-millisecond to minutes.
  EXPECT_LT(LatencyBucketsSeconds().front(), 0.001);
  EXPECT_GE(LatencyBucketsSeconds().back(), 300);
}

TEST_F(ServerMetricsTest, CountsRpcsByMethodAndCodeName) {
  metrics_->OnRpcFinished("Generate", 0);
  metrics_->OnRpcFinished("Generate", 0);
  metrics_->OnRpcFinished("Generate", 3);
  metrics_->OnRpcFinished("Score", 8);
  metrics_->OnRpcFinished("Score", 99);
  const Scrape scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_requests_total",
                         {{"method", "Generate"}, {"code", "OK"}}),
            2);
  EXPECT_EQ(scrape.Value("tvq_requests_total", {{"method", "Generate"},
                                                {"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_total",
                         {{"method", "Score"}, {"code", "RESOURCE_EXHAUSTED"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_total",
                         {{"method", "Score"}, {"code", "UNKNOWN"}}),
            1);
  // Known methods exist from the start.
  EXPECT_EQ(scrape.Value("tvq_requests_total",
                         {{"method", "GetModelInfo"}, {"code", "OK"}}),
            0);
  // gRPC calls are frontend="grpc", and nothing else.
  EXPECT_EQ(scrape.Value("tvq_requests_total", {{"frontend", "grpc"}}), 5);
  EXPECT_EQ(scrape.Value("tvq_requests_total", {{"frontend", "http"}}), 0);
}

TEST_F(ServerMetricsTest, HttpResponsesCountOnceInTheSharedRequestFamily) {
  absl::StatusOr<std::unique_ptr<HttpMetrics>> http =
      HttpMetrics::Create(*metrics_);
  ASSERT_TRUE(http.ok()) << http.status();
  (*http)->OnHttpResponse("/v1/completions", 200);
  (*http)->OnHttpResponse("/v1/completions", 429);
  (*http)->OnHttpResponse("/v1/completions", 499);
  (*http)->OnHttpResponse("other", 404);
  metrics_->OnRpcFinished("Generate", 0);
  const Scrape scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_requests_total", {{"frontend", "http"},
                                                {"method", "/v1/completions"},
                                                {"code", "OK"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_total",
                         {{"frontend", "http"},
                          {"method", "/v1/completions"},
                          {"code", "RESOURCE_EXHAUSTED"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_total", {{"frontend", "http"},
                                                {"method", "/v1/completions"},
                                                {"code", "CANCELLED"}}),
            1);
  EXPECT_EQ(scrape.Value("tvq_requests_total", {{"frontend", "http"},
                                                {"method", "other"},
                                                {"code", "NOT_FOUND"}}),
            1);
  // Each request once: 4 HTTP + 1 gRPC.
  EXPECT_EQ(scrape.Sum("tvq_requests_total"), 5);
  // The routes that run the model exist from the start.
  EXPECT_EQ(scrape.Value("tvq_requests_total",
                         {{"frontend", "http"},
                          {"method", "/v1/chat/completions"},
                          {"code", "OK"}}),
            0);
}

TEST(HttpStatusCodeNameTest, EveryStatusTheFrontEndSendsHasItsGrpcName) {
  const std::vector<std::pair<int, std::string>> expected = {
      {200, "OK"},
      {400, "INVALID_ARGUMENT"},
      {401, "UNAUTHENTICATED"},
      {403, "PERMISSION_DENIED"},
      {404, "NOT_FOUND"},
      {405, "UNIMPLEMENTED"},
      {413, "RESOURCE_EXHAUSTED"},
      {429, "RESOURCE_EXHAUSTED"},
      {431, "RESOURCE_EXHAUSTED"},
      {499, "CANCELLED"},
      {500, "INTERNAL"},
      {501, "UNIMPLEMENTED"},
      {503, "UNAVAILABLE"},
      {504, "DEADLINE_EXCEEDED"},
      {418, "INVALID_ARGUMENT"},
      {302, "UNKNOWN"},
  };
  for (const auto& [status, name] : expected) {
    EXPECT_EQ(GrpcCodeOfHttpStatus(status), name) << status;
  }
}

TEST_F(ServerMetricsTest, InfoGaugesKeepOneSeriesWithTheLatestLabels) {
  ASSERT_TRUE(metrics_->SetBuildInfo({"0.1.0", "cpu", "cpu (1 thread)"}).ok());
  ASSERT_TRUE(
      metrics_->SetBuildInfo({"0.1.0", "cuda", "NVIDIA H100 (cuda:0)"}).ok());
  ModelInfo model;
  model.name = "tiny-byte";
  model.path = "/models/tiny-byte";
  model.n_vocab = 259;
  ASSERT_TRUE(metrics_->SetModelInfo(model).ok());
  const Scrape scrape = Collect();
  EXPECT_EQ(scrape.Sum("tvq_build_info"), 1);
  EXPECT_EQ(
      scrape.Value("tvq_build_info", {{"version", "0.1.0"},
                                      {"backend", "cuda"},
                                      {"device", "NVIDIA H100 (cuda:0)"}}),
      1);
  ASSERT_EQ(scrape.Sum("tvq_model_info"), 1);
  for (const testing::MetricSample& sample : scrape.samples()) {
    if (sample.name != "tvq_model_info") continue;
    EXPECT_EQ(sample.labels.at("model"), "tiny-byte");
    EXPECT_EQ(sample.labels.at("n_vocab"), "259");
  }
}

TEST_F(ServerMetricsTest, EngineGaugesAreReadAtScrapeTime) {
  EXPECT_FALSE(Collect().Has("tvq_queue_length"));  // no model yet

  EngineSnapshot snapshot;
  snapshot.num_slots = 8;
  snapshot.busy_slots = 2;
  snapshot.queued_requests = 5;
  snapshot.state_bytes_per_sequence = 1000;
  metrics_->SetEngineSource([&snapshot] { return snapshot; });
  Scrape scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_queue_length"), 5);
  EXPECT_EQ(scrape.Value("tvq_requests_running"), 2);
  EXPECT_EQ(scrape.Value("tvq_slots", {{"state", "busy"}}), 2);
  EXPECT_EQ(scrape.Value("tvq_slots", {{"state", "free"}}), 6);
  EXPECT_EQ(scrape.Value("tvq_state_utilization_ratio"), 0.25);
  EXPECT_EQ(scrape.Value("tvq_state_bytes_per_sequence"), 1000);
  EXPECT_EQ(scrape.Value("tvq_state_memory_bytes", {{"state", "used"}}), 2000);
  EXPECT_EQ(scrape.Value("tvq_state_memory_bytes", {{"state", "reserved"}}),
            8000);
  EXPECT_FALSE(scrape.Has("tvq_gpu_memory_used_bytes"));
  EXPECT_EQ(scrape.Value("tvq_slot_capacity"), 8);
  EXPECT_EQ(scrape.Value("tvq_slots", {{"state", "pinned"}}), 0);

  // Pinned slots are neither busy nor free, and a new request cannot take
  // them: they count as used.
  snapshot.pinned_slots = 2;
  scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_requests_running"), 2);
  EXPECT_EQ(scrape.Value("tvq_slots", {{"state", "pinned"}}), 2);
  EXPECT_EQ(scrape.Value("tvq_slots", {{"state", "free"}}), 4);
  EXPECT_EQ(scrape.Value("tvq_state_utilization_ratio"), 0.5);
  EXPECT_EQ(scrape.Value("tvq_state_memory_bytes", {{"state", "used"}}), 4000);
  snapshot.pinned_slots = 0;

  // The next scrape sees the change; device memory appears when reported.
  snapshot.busy_slots = 8;
  snapshot.device_memory.push_back({"cuda:0", 3 << 20, 80 << 20});
  scrape = Collect();
  EXPECT_EQ(scrape.Value("tvq_state_utilization_ratio"), 1.0);
  EXPECT_EQ(scrape.Value("tvq_gpu_memory_used_bytes", {{"device", "cuda:0"}}),
            3 << 20);
  EXPECT_EQ(scrape.Value("tvq_gpu_memory_total_bytes", {{"device", "cuda:0"}}),
            80 << 20);

  metrics_->SetEngineSource(nullptr);
  EXPECT_FALSE(Collect().Has("tvq_queue_length"));
}

TEST(FinishedReasonLabelTest, MapsOutcomes) {
  RequestOutcome outcome;
  outcome.kind = RequestKind::kGenerate;
  outcome.finish_reason = scheduler::FinishReason::kStopSequence;
  EXPECT_EQ(FinishedReasonLabel(outcome), "stop_sequence");
  outcome.finish_reason = scheduler::FinishReason::kCancelled;  // drain
  EXPECT_EQ(FinishedReasonLabel(outcome), "cancelled");
  outcome.status_code = absl::StatusCode::kCancelled;
  EXPECT_EQ(FinishedReasonLabel(outcome), "cancelled");
  outcome.status_code = absl::StatusCode::kUnavailable;  // server stopped
  EXPECT_EQ(FinishedReasonLabel(outcome), "cancelled");
  outcome.status_code = absl::StatusCode::kDeadlineExceeded;
  EXPECT_EQ(FinishedReasonLabel(outcome), "deadline");
  outcome.status_code = absl::StatusCode::kInternal;
  EXPECT_EQ(FinishedReasonLabel(outcome), "error");
  outcome.kind = RequestKind::kScore;
  outcome.status_code = absl::StatusCode::kOk;
  EXPECT_EQ(FinishedReasonLabel(outcome), "complete");
}

}  // namespace
}  // namespace tvq::metrics
