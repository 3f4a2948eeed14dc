// Which front end submitted a request. The scheduler only carries it to its
// observer, where it becomes the metric label `frontend` ("grpc", "http"),
// so that every request-level family counts each request once, labelled
// with where it came from. Metrics create their per-front-end series from
// kFrontends.
#ifndef TVQ_SERVER_SCHEDULER_FRONTEND_H_
#define TVQ_SERVER_SCHEDULER_FRONTEND_H_

#include <array>
#include <string_view>

namespace tvq::scheduler {

enum class Frontend { kGrpc, kHttp };

inline constexpr std::array<Frontend, 2> kFrontends = {Frontend::kGrpc,
                                                       Frontend::kHttp};

// The label value: "grpc" or "http".
constexpr std::string_view FrontendName(Frontend frontend) {
  return frontend == Frontend::kHttp ? "http" : "grpc";
}

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_FRONTEND_H_
