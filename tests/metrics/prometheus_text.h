// Test helpers: parse the Prometheus text exposition format into samples,
// and fetch a URL over plain HTTP/1.0 (enough for /metrics and Prometheus's
// query API on loopback).
#ifndef TVQ_TESTS_METRICS_PROMETHEUS_TEXT_H_
#define TVQ_TESTS_METRICS_PROMETHEUS_TEXT_H_

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tvq::testing {

using MetricLabels = std::map<std::string, std::string>;

struct MetricSample {
  std::string name;
  MetricLabels labels;
  double value = 0;
};

// The samples of one scrape.
class Scrape {
 public:
  // Errors name the line that does not parse.
  static absl::StatusOr<Scrape> Parse(std::string_view text);

  // The sum of the samples `name` whose labels include every one of
  // `labels` (a series labelled {frontend, method, code} is found by
  // {method, code}, summed over the front ends); nullopt if none matches.
  std::optional<double> Find(std::string_view name,
                             const MetricLabels& labels = {}) const;
  // Same, but NaN when absent (reads well in EXPECT_EQ failures).
  double Value(std::string_view name, const MetricLabels& labels = {}) const;
  // Sum over every sample `name` whatever its labels (0 if none).
  double Sum(std::string_view name) const;
  // Whether any sample is called `name`.
  bool Has(std::string_view name) const;
  // Distinct sample names.
  std::vector<std::string> Names() const;

  const std::vector<MetricSample>& samples() const { return samples_; }

 private:
  std::vector<MetricSample> samples_;
};

struct HttpResponse {
  int status = 0;
  // Header names lower-cased.
  std::map<std::string, std::string> headers;
  std::string body;
};

// GET http://host:port/target (host: an IPv4 literal), HTTP/1.0, no
// redirects; chunked bodies are decoded.
absl::StatusOr<HttpResponse> HttpGet(
    const std::string& host, int port, const std::string& target,
    absl::Duration timeout = absl::Seconds(10));

// GET of an "http://host:port/path" URL.
absl::StatusOr<HttpResponse> HttpGetUrl(
    const std::string& url, absl::Duration timeout = absl::Seconds(10));

// A loopback TCP port that was free a moment ago (bind to port 0, close).
absl::StatusOr<int> FreeLoopbackPort();

}  // namespace tvq::testing

#endif  // TVQ_TESTS_METRICS_PROMETHEUS_TEXT_H_
