// The /metrics HTTP listener: address parsing, serving ServerMetrics over a
// real socket, and a clear error when the port is taken.
#include "server/metrics/metrics_exposer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "tests/metrics/prometheus_text.h"
#include "tests/support/sanitizers.h"

namespace tvq::metrics {
namespace {

TEST(ParseHostPortTest, AcceptsHostPortForms) {
  absl::StatusOr<HostPort> ipv4 = ParseHostPort("127.0.0.1:9464");
  ASSERT_TRUE(ipv4.ok()) << ipv4.status();
  EXPECT_EQ(ipv4->host, "127.0.0.1");
  EXPECT_EQ(ipv4->port, 9464);
  absl::StatusOr<HostPort> any = ParseHostPort("0.0.0.0:0");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->host, "0.0.0.0");
  EXPECT_EQ(any->port, 0);
}

TEST(ParseHostPortTest, RefusesIpv6WhichTheListenerCannotServe) {
  absl::StatusOr<HostPort> ipv6 = ParseHostPort("[::1]:9464");
  ASSERT_FALSE(ipv6.ok());
  EXPECT_EQ(ipv6.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ipv6.status().message().find("IPv4 only"), std::string::npos)
      << ipv6.status();
}

TEST(ParseHostPortTest, RejectsMalformedAddressesNamingThem) {
  for (const char* address :
       {"127.0.0.1", ":9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000",
        "127.0.0.1:-1", "::1:9464"}) {
    absl::StatusOr<HostPort> parsed = ParseHostPort(address);
    ASSERT_FALSE(parsed.ok()) << address;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(address), std::string::npos)
        << parsed.status();
  }
}

class MetricsExposerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
        ServerMetrics::Create();
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = *std::move(metrics);
  }
  std::unique_ptr<ServerMetrics> metrics_;
};

TEST_F(MetricsExposerTest, ServesTheMetricsOnAPickedPort) {
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer =
      MetricsExposer::Start("127.0.0.1:0", metrics_->Collectables());
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*exposer)->url(),
            absl::StrCat("http://127.0.0.1:", port, "/metrics"));

  metrics_->OnRpcFinished("Tokenize", 0);
  absl::StatusOr<testing::HttpResponse> response =
      testing::HttpGet("127.0.0.1", port, "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_NE(response->headers["content-type"].find("text/plain"),
            std::string::npos);
  absl::StatusOr<testing::Scrape> scrape =
      testing::Scrape::Parse(response->body);
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  EXPECT_EQ(scrape->Value("tvq_requests_total",
                          {{"method", "Tokenize"}, {"code", "OK"}}),
            1);
  EXPECT_TRUE(scrape->Has("process_resident_memory_bytes"));
  EXPECT_TRUE(scrape->Has("tvq_time_to_first_token_seconds_bucket"));

  if (testing::kSanitizerBuild) {
    GTEST_SKIP() << "not asking for another path under ASan/TSan: civetweb's "
                    "404 page (mg_send_http_error, vsnprintf) overflows its "
                    "worker's fixed small stack (USE_STACK_SIZE, compiled "
                    "into Debian's libcivetweb) once the sanitizer's "
                    "interceptors add their frames";
  }
  absl::StatusOr<testing::HttpResponse> elsewhere =
      testing::HttpGet("127.0.0.1", port, "/other");
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.status();
  EXPECT_EQ(elsewhere->status, 404);
}

// Two connections that sent half a request used to hold both of civetweb's
// workers until its 30 s read timeout: every scrape waited. Now a scrape is
// answered while they hang.
TEST_F(MetricsExposerTest, ScrapesAreAnsweredWhileSlowClientsHang) {
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer =
      MetricsExposer::Start("127.0.0.1:0", metrics_->Collectables());
  ASSERT_TRUE(exposer.ok()) << exposer.status();
  const int port = (*exposer)->port();
  std::vector<int> slow;
  for (int i = 0; i < 4; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in peer{};
    peer.sin_family = AF_INET;
    peer.sin_port = htons(static_cast<uint16_t>(port));
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(
        ::connect(fd, reinterpret_cast<const sockaddr*>(&peer), sizeof(peer)),
        0);
    constexpr char kHalf[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
    ASSERT_EQ(::send(fd, kHalf, sizeof(kHalf) - 1, MSG_NOSIGNAL),
              static_cast<ssize_t>(sizeof(kHalf) - 1));
    slow.push_back(fd);
  }
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  absl::StatusOr<testing::HttpResponse> response =
      testing::HttpGet("127.0.0.1", port, "/metrics", absl::Seconds(20));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  // Generous: the slow clients held every scrape for 30 s.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  for (int fd : slow) ::close(fd);
}

TEST_F(MetricsExposerTest, ATakenPortIsAClearError) {
  absl::StatusOr<std::unique_ptr<MetricsExposer>> first =
      MetricsExposer::Start("127.0.0.1:0", metrics_->Collectables());
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsExposer>> second =
      MetricsExposer::Start(address, metrics_->Collectables());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(address), std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("Address already in use"),
            std::string::npos)
      << second.status();
}

TEST_F(MetricsExposerTest, AMalformedAddressIsInvalidArgument) {
  absl::StatusOr<std::unique_ptr<MetricsExposer>> exposer =
      MetricsExposer::Start("localhost", metrics_->Collectables());
  ASSERT_FALSE(exposer.ok());
  EXPECT_EQ(exposer.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tvq::metrics
