// The metrics endpoint of a real tvq-server (tests): where it listens (from
// its log) and one scrape of it, parsed.
#ifndef TVQ_TESTS_INTEGRATION_METRICS_SCRAPE_H_
#define TVQ_TESTS_INTEGRATION_METRICS_SCRAPE_H_

#include <string>

#include "tests/metrics/prometheus_text.h"

namespace tvq::testing {

// The metrics URL the server logged ("metrics on http://..."); "" if none.
std::string MetricsUrl(const std::string& output);

// GET `url`, parsed; a test failure (and an empty scrape) if either fails.
Scrape ScrapeNow(const std::string& url);

}  // namespace tvq::testing

#endif  // TVQ_TESTS_INTEGRATION_METRICS_SCRAPE_H_
