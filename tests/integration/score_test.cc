// Score over gRPC equals the golden logprobs (2e-5) for every golden model:
// end-to-end exactness of the served engine.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/server_process.h"
#include "tests/support/sanitizers.h"
#include "tests/support/test_util.h"

namespace tvq::testing {
namespace {

// float32 implementations land within 3e-6 of the float64 reference; 2e-5
// catches any real mistake (tests/data/golden/README.md).
constexpr double kTolerance = 2e-5;

class ScoreGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScoreGoldenTest, ScoreReproducesTheGoldenRows) {
  if (GetParam() == "tiny-tied") TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  const GoldenCase golden = LoadGolden(GetParam());
  const int T = static_cast<int>(golden.tokens.size());
  const int V = static_cast<int>(golden.logprobs.size() / T);
  // A small prefill chunk: the sequence crosses several chunk boundaries.
  auto server = ServerProcess::Start(GoldenModel(GetParam()),
                                     {"--num-slots=2", "--prefill-chunk=16"});
  ASSERT_TRUE(server.ok()) << server.status();

  v1::ScoreRequest request;
  request.mutable_token_ids()->mutable_ids()->Add(golden.tokens.begin(),
                                                  golden.tokens.end());
  request.set_no_eos_prefix(true);  // golden tokens start with eos
  request.set_top_logprobs(20);
  request.set_request_id("golden");
  v1::ScoreResponse response;
  grpc::ClientContext context;
  const grpc::Status status =
      (*server)->stub().Score(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.request_id(), "golden");
  ASSERT_EQ(response.token_ids_size(), T);
  ASSERT_EQ(response.token_logprobs_size(), T - 1);

  double total = 0;
  int bytes = 0;
  double worst = 0;
  for (int t = 0; t + 1 < T; ++t) {
    const float* row = golden.logprobs.data() + static_cast<size_t>(t) * V;
    const v1::TokenLogprob& entry = response.token_logprobs(t);
    ASSERT_EQ(entry.token_id(), golden.tokens[t + 1]);
    const double expected = row[golden.tokens[t + 1]];
    worst = std::max(worst, std::abs(entry.logprob() - expected));
    EXPECT_NEAR(entry.logprob(), expected, kTolerance) << "position " << t;
    total += expected;
    if (golden.tokens[t + 1] > 2) ++bytes;
    // The top 20 of the row, most likely first.
    std::vector<int> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return row[a] > row[b]; });
    ASSERT_EQ(entry.top_logprobs_size(), 20);
    // Rows have a top-1/top-2 gap >= 1e-3, so the argmax is exact.
    EXPECT_EQ(entry.top_logprobs(0).token_id(), order[0]) << "position " << t;
    for (int k = 0; k < 20; ++k) {
      EXPECT_NEAR(entry.top_logprobs(k).logprob(), row[order[k]], kTolerance)
          << "position " << t << " rank " << k;
    }
  }
  EXPECT_NEAR(response.total_logprob(), total, kTolerance * T);
  EXPECT_EQ(response.usage().prompt_tokens(), T);
  if (GetParam() != "tiny-tied") {  // byte vocabularies
    ASSERT_TRUE(response.has_bits_per_byte());
    EXPECT_NEAR(response.bits_per_byte(), -total / std::log(2.0) / bytes, 1e-5);
  } else {
    EXPECT_FALSE(response.has_bits_per_byte());
  }
  RecordProperty("max_abs_error", std::to_string(worst));
}

TEST_P(ScoreGoldenTest, DefaultEosPrefixScoresTheFirstToken) {
  if (GetParam() == "tiny-tied") TVQ_SKIP_WITHOUT_SENTENCEPIECE();
  const GoldenCase golden = LoadGolden(GetParam());
  const int T = static_cast<int>(golden.tokens.size());
  const int V = static_cast<int>(golden.logprobs.size() / T);
  auto server =
      ServerProcess::Start(GoldenModel(GetParam()), {"--num-slots=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  // Without no_eos_prefix the server adds the eos the golden tokens start
  // with: same rows.
  v1::ScoreRequest request;
  request.mutable_token_ids()->mutable_ids()->Add(golden.tokens.begin() + 1,
                                                  golden.tokens.end());
  v1::ScoreResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE((*server)->stub().Score(&context, request, &response).ok());
  ASSERT_EQ(response.token_ids_size(), T);
  EXPECT_EQ(response.token_ids(0), 1);
  for (int t = 0; t + 1 < T; ++t) {
    EXPECT_NEAR(
        response.token_logprobs(t).logprob(),
        golden.logprobs[static_cast<size_t>(t) * V + golden.tokens[t + 1]],
        kTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, ScoreGoldenTest,
                         ::testing::Values("tiny-byte", "tiny-noagg",
                                           "tiny-tied"));

}  // namespace
}  // namespace tvq::testing
