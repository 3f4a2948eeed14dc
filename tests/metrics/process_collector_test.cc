// The /proc/self process collector: parsing of /proc/<pid>/stat and
// /proc/stat, and the real figures of this test process.
#include "server/metrics/process_collector.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "tests/metrics/prometheus_text.h"

namespace tvq::metrics {
namespace {

// A /proc/<pid>/stat line whose command name holds spaces and ')', with
// utime 250, stime 150, starttime 1000, vsize 123456789, rss 1000 pages.
std::string StatLine() {
  std::string line = "4242 (tvq server) (x)) S";
  // Fields 4 .. 52; field n gets value n unless set below.
  for (int field = 4; field <= 52; ++field) {
    int64_t value = field;
    if (field == 14) value = 250;
    if (field == 15) value = 150;
    if (field == 22) value = 1000;
    if (field == 23) value = 123456789;
    if (field == 24) value = 1000;
    absl::StrAppend(&line, " ", value);
  }
  return line + "\n";
}

TEST(ParseProcStatTest, ReadsTheFieldsAfterTheLastParenthesis) {
  absl::StatusOr<ProcessStats> stats =
      ParseProcStat(StatLine(), /*clock_ticks=*/100, /*page_bytes=*/4096);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_DOUBLE_EQ(stats->cpu_seconds, 4.0);  // (250 + 150) / 100
  EXPECT_DOUBLE_EQ(stats->start_time_seconds, 10.0);
  EXPECT_DOUBLE_EQ(stats->virtual_memory_bytes, 123456789.0);
  EXPECT_DOUBLE_EQ(stats->resident_memory_bytes, 1000.0 * 4096);
}

TEST(ParseProcStatTest, NamesWhatIsWrong) {
  absl::StatusOr<ProcessStats> no_parenthesis =
      ParseProcStat("4242 tvq S 1 2 3", 100, 4096);
  ASSERT_FALSE(no_parenthesis.ok());
  EXPECT_NE(no_parenthesis.status().message().find("')'"), std::string::npos)
      << no_parenthesis.status();

  absl::StatusOr<ProcessStats> short_line =
      ParseProcStat("4242 (tvq) S 1 2 3", 100, 4096);
  ASSERT_FALSE(short_line.ok());
  EXPECT_NE(short_line.status().message().find("4 fields"), std::string::npos)
      << short_line.status();

  std::string line = StatLine();
  line.replace(line.find(" 250 "), 5, " 2x0 ");
  absl::StatusOr<ProcessStats> bad_number = ParseProcStat(line, 100, 4096);
  ASSERT_FALSE(bad_number.ok());
  EXPECT_NE(bad_number.status().message().find("utime"), std::string::npos)
      << bad_number.status();
}

TEST(ParseBootTimeTest, FindsBtime) {
  absl::StatusOr<int64_t> boot =
      ParseBootTime("cpu  1 2 3 4\nintr 5\nbtime 1700000123\nprocesses 9\n");
  ASSERT_TRUE(boot.ok()) << boot.status();
  EXPECT_EQ(*boot, 1700000123);
  EXPECT_FALSE(ParseBootTime("cpu 1 2 3\n").ok());
  EXPECT_FALSE(ParseBootTime("btime soon\n").ok());
}

TEST(ReadProcessStatsTest, DescribesThisProcess) {
  absl::StatusOr<ProcessStats> before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(before->resident_memory_bytes, 0);
  EXPECT_GE(before->virtual_memory_bytes, before->resident_memory_bytes);
  EXPECT_GE(before->cpu_seconds, 0);
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  // Started before now, and (this test binary) not long ago; /proc/stat's
  // btime is whole seconds, hence the 1 s slack.
  EXPECT_LE(before->start_time_seconds, now + 1);
  EXPECT_GT(before->start_time_seconds, now - 3600);
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  EXPECT_EQ(before->max_fds, static_cast<double>(limit.rlim_cur));

  // One more open descriptor is counted as one more.
  const int fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  absl::StatusOr<ProcessStats> after = ReadProcessStats();
  close(fd);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->open_fds, before->open_fds + 1);
  EXPECT_EQ(after->start_time_seconds, before->start_time_seconds);
}

TEST(ProcessCollectorTest, ExposesPrometheusProcessNames) {
  const std::string text =
      prometheus::TextSerializer().Serialize(ProcessCollector().Collect());
  absl::StatusOr<testing::Scrape> scrape = testing::Scrape::Parse(text);
  ASSERT_TRUE(scrape.ok()) << scrape.status();
  const std::vector<std::string> expected = {
      "process_cpu_seconds_total",  "process_max_fds",
      "process_open_fds",           "process_resident_memory_bytes",
      "process_start_time_seconds", "process_virtual_memory_bytes"};
  EXPECT_EQ(scrape->Names(), expected);
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE process_resident_memory_bytes gauge"),
            std::string::npos);
  EXPECT_GT(scrape->Value("process_resident_memory_bytes"), 0);
}

}  // namespace
}  // namespace tvq::metrics
