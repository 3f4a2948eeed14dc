// Per-kind metric series come from the kinds table (scheduler/request_kind.h):
// every listed kind has its {kind=...} series from the first scrape, with the
// finished reasons of a sampling or a non-sampling kind.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "server/scheduler/request_kind.h"

namespace tvq::metrics {
namespace {

bool Has(const std::string& text, const std::string& series) {
  return text.find(series) != std::string::npos;
}

TEST(RequestKindMetricsTest, EveryListedKindHasItsSeriesForEachFrontend) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
      ServerMetrics::Create();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const std::string text = (*metrics)->SerializeText();
  for (scheduler::Frontend frontend : scheduler::kFrontends) {
    const std::string front = absl::StrCat(
        "frontend=\"", std::string(scheduler::FrontendName(frontend)), "\"");
    for (const scheduler::RequestKindInfo& kind : scheduler::kRequestKinds) {
      const std::string label =
          absl::StrCat("kind=\"", std::string(kind.name), "\"");
      for (const char* family : {"tvq_request_duration_seconds_count",
                                 "tvq_queue_wait_seconds_count",
                                 "tvq_prefill_duration_seconds_count",
                                 "tvq_request_prompt_tokens_count"}) {
        EXPECT_TRUE(
            Has(text, absl::StrCat(family, "{", front, ",", label, "}")))
            << family << " " << front << " " << label;
      }
      EXPECT_TRUE(Has(text, absl::StrCat("tvq_requests_rejected_total{code=\"",
                                         "UNAVAILABLE\",", front, ",", label,
                                         "}")))
          << front << " " << label;
      const std::string done = kind.samples_tokens ? "length" : "complete";
      EXPECT_TRUE(Has(text, absl::StrCat("tvq_requests_finished_total{", front,
                                         ",", label, ",reason=\"", done,
                                         "\"}")))
          << front << " " << label;
      EXPECT_EQ(std::string(RequestKindName(kind.kind)),
                std::string(kind.name));
    }
    for (const char* family : {"tvq_time_to_first_token_seconds_count",
                               "tvq_inter_token_latency_seconds_count",
                               "tvq_decode_duration_seconds_count",
                               "tvq_request_generated_tokens_count",
                               "tvq_prompt_tokens_total",
                               "tvq_generated_tokens_total"}) {
      EXPECT_TRUE(Has(text, absl::StrCat(family, "{", front, "}")))
          << family << " " << front;
    }
  }
}

TEST(RequestKindMetricsTest, ObservationsLandInTheirKindAndFrontendSeries) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
      ServerMetrics::Create();
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)
      ->queue_wait(scheduler::RequestKind::kScore, scheduler::Frontend::kHttp)
      .Observe(0.5);
  const std::string text = (*metrics)->SerializeText();
  EXPECT_TRUE(Has(
      text,
      "tvq_queue_wait_seconds_count{frontend=\"http\",kind=\"score\"} 1"));
  EXPECT_TRUE(Has(
      text,
      "tvq_queue_wait_seconds_count{frontend=\"grpc\",kind=\"score\"} 0"));
  EXPECT_TRUE(Has(
      text,
      "tvq_queue_wait_seconds_count{frontend=\"http\",kind=\"generate\"} 0"));
}

}  // namespace
}  // namespace tvq::metrics
