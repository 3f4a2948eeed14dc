#include "client/flag_set.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace tvq::client {
namespace {

// A flag set with one flag of every kind, bound to its own members.
struct DemoFlags {
  DemoFlags() : flags("demo [flags] TEXT", "Demonstrates the parser.") {
    flags.Add("count", &count, "N", "How many.");
    flags.Add("ratio", &ratio, "FLOAT", "A ratio.");
    flags.Add("name", &name, "TEXT", "A name.");
    flags.Add("verbose", &verbose, "", "Talk more.");
    flags.Add("temperature", &temperature, "FLOAT", "Optional float.");
    flags.Add("seed", &seed, "UINT64", "Optional seed.");
    flags.Add("ids", &ids, "ID,ID", "Token ids.");
    flags.Add("stop", &stops, "TEXT", "Repeatable.");
  }

  absl::StatusOr<std::vector<std::string>> Parse(
      const std::vector<std::string>& args) {
    return flags.Parse(args);
  }

  FlagSet flags;
  int32_t count = 3;
  double ratio = 0.5;
  std::string name = "default";
  bool verbose = false;
  std::optional<float> temperature;
  std::optional<uint64_t> seed;
  std::vector<int32_t> ids;
  std::vector<std::string> stops;
};

class FlagSetTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::vector<std::string>> Parse(
      const std::vector<std::string>& args) {
    return demo_.Parse(args);
  }

  DemoFlags demo_;
  FlagSet& flags_ = demo_.flags;
  int32_t& count_ = demo_.count;
  double& ratio_ = demo_.ratio;
  std::string& name_ = demo_.name;
  bool& verbose_ = demo_.verbose;
  std::optional<float>& temperature_ = demo_.temperature;
  std::optional<uint64_t>& seed_ = demo_.seed;
  std::vector<int32_t>& ids_ = demo_.ids;
  std::vector<std::string>& stops_ = demo_.stops;
};

TEST_F(FlagSetTest, ParsesEveryFormAndKeepsPositionals) {
  absl::StatusOr<std::vector<std::string>> positional = Parse(
      {"--count=7", "first", "--ratio", "-0.25", "--verbose", "--temperature=0",
       "--seed", "18446744073709551615", "--ids", "1,72, 101", "--ids=5",
       "--stop", "a", "--stop=b c", "-", "--name=x=y"});
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_EQ(*positional, (std::vector<std::string>{"first", "-"}));
  EXPECT_EQ(count_, 7);
  EXPECT_DOUBLE_EQ(ratio_, -0.25);
  EXPECT_TRUE(verbose_);
  ASSERT_TRUE(temperature_.has_value());
  EXPECT_EQ(*temperature_, 0.0f);
  EXPECT_EQ(seed_, 18446744073709551615u);
  EXPECT_EQ(ids_, (std::vector<int32_t>{1, 72, 101, 5}));
  EXPECT_EQ(stops_, (std::vector<std::string>{"a", "b c"}));
  EXPECT_EQ(name_, "x=y");
  EXPECT_FALSE(flags_.help_requested());
}

TEST_F(FlagSetTest, UnsetOptionalsStayUnset) {
  ASSERT_TRUE(Parse({"text"}).ok());
  EXPECT_FALSE(temperature_.has_value());
  EXPECT_FALSE(seed_.has_value());
  EXPECT_EQ(count_, 3);
}

TEST_F(FlagSetTest, BooleanTakesExplicitValue) {
  ASSERT_TRUE(Parse({"--verbose=true", "--verbose=false"}).ok());
  EXPECT_FALSE(verbose_);
  absl::StatusOr<std::vector<std::string>> bad = Parse({"--verbose=maybe"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--verbose"), absl::string_view::npos);
}

TEST_F(FlagSetTest, DoubleDashEndsFlags) {
  absl::StatusOr<std::vector<std::string>> positional =
      Parse({"--count=1", "--", "--count=2", "-x"});
  ASSERT_TRUE(positional.ok());
  EXPECT_EQ(*positional, (std::vector<std::string>{"--count=2", "-x"}));
  EXPECT_EQ(count_, 1);
}

TEST_F(FlagSetTest, StopsAtFirstPositionalWhenAsked) {
  absl::StatusOr<std::vector<std::string>> rest =
      flags_.Parse({"--count=4", "generate", "--count=9"},
                   /*stop_at_positional=*/true);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(*rest, (std::vector<std::string>{"generate", "--count=9"}));
  EXPECT_EQ(count_, 4);
}

TEST_F(FlagSetTest, ErrorsNameTheFlagAndTheValue) {
  const struct {
    std::vector<std::string> args;
    std::string expected;
  } cases[] = {
      {{"--bogus"}, "unknown flag --bogus"},
      {{"-v"}, "unknown flag -v"},
      {{"--count=abc"}, "invalid value for --count: \"abc\""},
      {{"--count=99999999999"}, "--count"},
      {{"--ratio=fast"}, "invalid value for --ratio: \"fast\""},
      {{"--seed=-1"}, "invalid value for --seed: \"-1\""},
      {{"--ids=1,x,3"}, "\"x\" is not a token id"},
      {{"--count"}, "flag --count needs a value (N)"},
  };
  for (const auto& test : cases) {
    DemoFlags fresh;
    absl::StatusOr<std::vector<std::string>> result = fresh.Parse(test.args);
    ASSERT_FALSE(result.ok()) << test.args[0];
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(result.status().message().find(test.expected),
              absl::string_view::npos)
        << result.status().message() << " should contain " << test.expected;
  }
}

TEST_F(FlagSetTest, HelpIsRecognised) {
  ASSERT_TRUE(Parse({"-h"}).ok());
  EXPECT_TRUE(flags_.help_requested());
}

TEST_F(FlagSetTest, UsageDocumentsEveryFlagWithDefaults) {
  const std::string usage = flags_.Usage("prog");
  EXPECT_EQ(usage.rfind("usage: prog demo [flags] TEXT\n", 0), 0u) << usage;
  for (const char* expected :
       {"--count=N", "How many. (default: 3)", "--ratio=FLOAT",
        "(default: 0.5)", "--name=TEXT", "(default: \"default\")",
        "--verbose\n", "--temperature=FLOAT", "--seed=UINT64", "--ids=ID,ID",
        "--stop=TEXT", "--help", "Demonstrates the parser."}) {
    EXPECT_NE(usage.find(expected), std::string::npos)
        << "missing " << expected << " in\n"
        << usage;
  }
  // Unset optionals and false booleans show no default.
  EXPECT_EQ(usage.find("Talk more. (default"), std::string::npos);
  EXPECT_EQ(usage.find("Optional float. (default"), std::string::npos);
}

TEST(ParseTokenIdListTest, AcceptsCommasAndWhitespace) {
  absl::StatusOr<std::vector<int32_t>> ids =
      ParseTokenIdList(" 1,72 ,101\n5\t6,,");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 72, 101, 5, 6}));
  EXPECT_TRUE(ParseTokenIdList("")->empty());
  EXPECT_FALSE(ParseTokenIdList("1;2").ok());
}

}  // namespace
}  // namespace tvq::client
