#include "server/metrics/auth_metrics.h"

#include <exception>

#include "server/base/str_cat.h"

namespace tvq::metrics {
namespace {

constexpr const char* kFrontends[2] = {"grpc", "http"};
constexpr const char* kReasons[2] = {"missing", "invalid"};

}  // namespace

AuthMetrics::AuthMetrics()
    : registry_(std::make_shared<prometheus::Registry>()) {}

absl::StatusOr<std::unique_ptr<AuthMetrics>> AuthMetrics::Create() {
  std::unique_ptr<AuthMetrics> metrics(new AuthMetrics());
  try {
    auto& family = prometheus::BuildCounter()
                       .Name("tvq_auth_failures_total")
                       .Help(
                           "Calls refused for their API key (--api-keys-file), "
                           "by front end and reason: missing (no "
                           "credential) or invalid (not a key of the file).")
                       .Register(*metrics->registry_);
    for (int f = 0; f < 2; ++f) {
      for (int r = 0; r < 2; ++r) {
        metrics->failures_[f][r] =
            &family.Add({{"frontend", kFrontends[f]}, {"reason", kReasons[r]}});
      }
    }
  } catch (const std::exception& error) {
    return absl::InternalError(::tvq::runtime::StrCat(
        "registering the authentication metrics: ", error.what()));
  }
  return metrics;
}

void AuthMetrics::OnAuthFailure(std::string_view frontend,
                                std::string_view reason) {
  const int f = frontend == "http" ? 1 : 0;
  const int r = reason == "missing" ? 0 : 1;
  failures_[f][r]->Increment();
}

}  // namespace tvq::metrics
