// core::Readiness: loading -> serving -> draining, with the UNAVAILABLE
// messages every front end returns, on a real engine.
#include "server/core/readiness.h"

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/engine.h"
#include "server/core/engine_config.h"

namespace tvq::core {
namespace {

using ::testing::HasSubstr;

void ExpectUnavailable(const absl::StatusOr<Engine*>& engine,
                       const std::string& message) {
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(engine.status().message()), HasSubstr(message));
}

TEST(ReadinessTest, LoadingServingDraining) {
  Readiness readiness;
  EXPECT_EQ(readiness.state(), ReadinessState::kLoading);
  ExpectUnavailable(readiness.ForNewWork(),
                    "the model is loading; retry shortly");
  ExpectUnavailable(readiness.ForQueries(),
                    "the model is loading; retry shortly");

  EngineConfig config;
  config.model_dir = std::string(TVQ_TEST_DATA_DIR) + "/golden/tiny-byte/model";
  config.device = "cpu";
  config.threads = 1;
  config.num_slots = 1;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, nullptr);
  ASSERT_TRUE(engine.ok()) << engine.status();

  readiness.SetServing(engine->get());
  EXPECT_EQ(readiness.state(), ReadinessState::kServing);
  ASSERT_TRUE(readiness.ForNewWork().ok());
  EXPECT_EQ(*readiness.ForNewWork(), engine->get());
  EXPECT_EQ(*readiness.ForQueries(), engine->get());

  readiness.SetDraining();
  EXPECT_EQ(readiness.state(), ReadinessState::kDraining);
  ExpectUnavailable(readiness.ForNewWork(),
                    "the server is shutting down and accepts no new requests");
  EXPECT_EQ(*readiness.ForQueries(), engine->get());
  readiness.SetDraining();  // idempotent
  EXPECT_EQ(readiness.state(), ReadinessState::kDraining);
}

TEST(ReadinessTest, DrainingWhileLoadingStillSaysLoading) {
  Readiness readiness;
  readiness.SetDraining();
  ExpectUnavailable(readiness.ForNewWork(), "the model is loading");
  ExpectUnavailable(readiness.ForQueries(), "the model is loading");
}

}  // namespace
}  // namespace tvq::core
