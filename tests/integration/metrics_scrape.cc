#include "tests/integration/metrics_scrape.h"

#include <utility>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace tvq::testing {

std::string MetricsUrl(const std::string& output) {
  constexpr char kMarker[] = "metrics on ";
  const size_t at = output.find(kMarker);
  if (at == std::string::npos) return "";
  const size_t begin = at + sizeof(kMarker) - 1;
  return output.substr(begin, output.find('\n', begin) - begin);
}

Scrape ScrapeNow(const std::string& url) {
  absl::StatusOr<HttpResponse> response = HttpGetUrl(url);
  EXPECT_TRUE(response.ok()) << response.status();
  if (!response.ok()) return Scrape();
  absl::StatusOr<Scrape> scrape = Scrape::Parse(response->body);
  EXPECT_TRUE(scrape.ok()) << scrape.status();
  return scrape.ok() ? *std::move(scrape) : Scrape();
}

}  // namespace tvq::testing
