#include "client/latency_summary.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tvq::client {

double NearestRankPercentile(const std::vector<double>& sorted,
                             double fraction) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(fraction * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::clamp(
                           rank, 1.0, static_cast<double>(sorted.size()))) -
                       1;
  return sorted[index];
}

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary summary;
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  summary.count = static_cast<int64_t>(samples.size());
  summary.mean = std::accumulate(samples.begin(), samples.end(), 0.0) /
                 static_cast<double>(samples.size());
  summary.p50 = NearestRankPercentile(samples, 0.50);
  summary.p90 = NearestRankPercentile(samples, 0.90);
  summary.p99 = NearestRankPercentile(samples, 0.99);
  summary.max = samples.back();
  return summary;
}

}  // namespace tvq::client
