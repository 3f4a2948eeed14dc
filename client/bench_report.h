// Summary of a load generator run: throughput, latency percentiles and
// stream outcomes by status code, as JSON and as text.
#ifndef TVQ_CLIENT_BENCH_REPORT_H_
#define TVQ_CLIENT_BENCH_REPORT_H_

#include <string>

#include "absl/status/status.h"
#include "client/load_generator.h"
#include "nlohmann/json.hpp"

namespace tvq::client {

// The report (docs/client.md lists its fields). `channels` is echoed in the
// config section.
nlohmann::ordered_json BenchReportToJson(const LoadConfig& config, int channels,
                                         const LoadResult& result);

// The same report for a terminal.
std::string FormatBenchReport(const nlohmann::ordered_json& report);

// OK when every stream ended OK, or CANCELLED after the generator cancelled
// it; otherwise an error with the most frequent failure code that counts
// the failures by code.
absl::Status BenchOutcome(const LoadResult& result);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_BENCH_REPORT_H_
