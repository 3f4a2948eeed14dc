#include "client/latency_summary.h"

#include <vector>

#include "gtest/gtest.h"

namespace tvq::client {
namespace {

TEST(LatencySummaryTest, NearestRankPercentilesOfOneToHundred) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);  // unsorted input
  const LatencySummary summary = Summarize(samples);
  EXPECT_EQ(summary.count, 100);
  EXPECT_DOUBLE_EQ(summary.mean, 50.5);
  EXPECT_DOUBLE_EQ(summary.p50, 50);
  EXPECT_DOUBLE_EQ(summary.p90, 90);
  EXPECT_DOUBLE_EQ(summary.p99, 99);
  EXPECT_DOUBLE_EQ(summary.max, 100);
}

TEST(LatencySummaryTest, SmallSamples) {
  const LatencySummary one = Summarize({0.25});
  EXPECT_EQ(one.count, 1);
  EXPECT_DOUBLE_EQ(one.p50, 0.25);
  EXPECT_DOUBLE_EQ(one.p99, 0.25);
  // Three samples: p50 is the 2nd (ceil(1.5)), p90 and p99 the 3rd.
  const LatencySummary three = Summarize({3, 1, 2});
  EXPECT_DOUBLE_EQ(three.p50, 2);
  EXPECT_DOUBLE_EQ(three.p90, 3);
  EXPECT_DOUBLE_EQ(three.p99, 3);
}

TEST(LatencySummaryTest, EmptyIsAllZero) {
  const LatencySummary summary = Summarize({});
  EXPECT_EQ(summary.count, 0);
  EXPECT_EQ(summary.p50, 0);
  EXPECT_EQ(summary.max, 0);
}

}  // namespace
}  // namespace tvq::client
