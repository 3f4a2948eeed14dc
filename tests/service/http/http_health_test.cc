// GET /health (and the routes behind it) while the model is loading and
// while the server drains, on the real transport: the real HttpServer
// (Boost.Beast on loopback) with the real OpenAI routes over a real
// core::Readiness, queried over a socket. Loading is the state a server is
// in from its start until the engine exists (main.cc starts the HTTP
// listener first), so no engine is needed to hold it there for as long as
// the test likes; the serving state (200) is covered end to end against the
// real server (http_errors_test.py, openai_completions_test.py).
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/core/readiness.h"
#include "server/service/http/http_server.h"
#include "server/service/http/openai_routes.h"
#include "tests/metrics/prometheus_text.h"

namespace tvq::service::http {
namespace {

using ::testing::HasSubstr;

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OpenAiOptions options;
    options.served_model_name = "tiny-byte";
    routes_ = std::make_unique<OpenAiRoutes>(&readiness_, options);
    HttpServerOptions server_options;
    server_options.address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<HttpServer>> server =
        HttpServer::Start(server_options, routes_.get(), nullptr);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    const std::string& address = server_->address();
    ASSERT_TRUE(
        absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port_));
  }

  // (status, error.code, error.message) of GET `path`.
  struct Answer {
    int status = 0;
    nlohmann::json body;
  };
  Answer Get(const std::string& path) {
    absl::StatusOr<testing::HttpResponse> response =
        testing::HttpGet("127.0.0.1", port_, path);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    return {response->status,
            nlohmann::json::parse(response->body, nullptr, false)};
  }

  core::Readiness readiness_;
  std::unique_ptr<OpenAiRoutes> routes_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HealthTest, LoadingIs503ForHealthAndEveryRouteThatNeedsTheModel) {
  ASSERT_EQ(readiness_.state(), core::ReadinessState::kLoading);
  for (const char* path : {"/health", "/v1/models", "/v1/models/tiny-byte",
                           "/v1/responses/resp_x"}) {
    const Answer answer = Get(path);
    EXPECT_EQ(answer.status, 503) << path;
    EXPECT_EQ(answer.body["error"]["code"], "unavailable") << path;
    EXPECT_EQ(answer.body["error"]["type"], "service_unavailable_error")
        << path;
    EXPECT_THAT(answer.body["error"]["message"].get<std::string>(),
                HasSubstr("loading"))
        << path;
  }
  // Unknown routes are still 404: the router answers while loading.
  EXPECT_EQ(Get("/v1/nothing").status, 404);
}

TEST_F(HealthTest, DrainingIs503SayingSo) {
  readiness_.SetDraining();
  const Answer answer = Get("/health");
  EXPECT_EQ(answer.status, 503);
  EXPECT_EQ(answer.body["error"]["code"], "unavailable");
  EXPECT_THAT(answer.body["error"]["message"].get<std::string>(),
              HasSubstr("shutting down"));
}

}  // namespace
}  // namespace tvq::service::http
