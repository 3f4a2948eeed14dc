// Percentile summaries of latency samples for the load generator's report.
#ifndef TVQ_CLIENT_LATENCY_SUMMARY_H_
#define TVQ_CLIENT_LATENCY_SUMMARY_H_

#include <cstdint>
#include <vector>

namespace tvq::client {

struct LatencySummary {
  int64_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};

// Nearest-rank percentile of ascending `sorted`: the smallest sample with at
// least `fraction` of the samples at or below it. 0 when empty.
double NearestRankPercentile(const std::vector<double>& sorted,
                             double fraction);

// Count, mean, p50/p90/p99 (nearest rank) and max of `samples`, in their
// unit. All zero when there are none.
LatencySummary Summarize(std::vector<double> samples);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_LATENCY_SUMMARY_H_
