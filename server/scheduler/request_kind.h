// The kinds of job the scheduler runs, with a names table. Metrics create
// their per-kind series from kRequestKinds, so a new kind appears in them
// once it is listed here.
#ifndef TVQ_SERVER_SCHEDULER_REQUEST_KIND_H_
#define TVQ_SERVER_SCHEDULER_REQUEST_KIND_H_

#include <array>
#include <string_view>

namespace tvq::scheduler {

enum class RequestKind { kGenerate, kScore, kAppend };

struct RequestKindInfo {
  RequestKind kind;
  // The metric label value: "generate", "score", "append".
  std::string_view name;
  // Whether the kind samples tokens (then it ends with a FinishReason, and
  // has first-token and decode times); otherwise it ends "complete".
  bool samples_tokens;
};

inline constexpr std::array<RequestKindInfo, 3> kRequestKinds = {{
    {RequestKind::kGenerate, "generate", true},
    {RequestKind::kScore, "score", false},
    // Prefill into a session's state without sampling (sessions).
    {RequestKind::kAppend, "append", false},
}};

constexpr const RequestKindInfo& RequestKindInfoOf(RequestKind kind) {
  for (const RequestKindInfo& info : kRequestKinds) {
    if (info.kind == kind) return info;
  }
  return kRequestKinds[0];  // unreachable: every kind is listed
}

constexpr std::string_view RequestKindName(RequestKind kind) {
  return RequestKindInfoOf(kind).name;
}

constexpr bool SamplesTokens(RequestKind kind) {
  return RequestKindInfoOf(kind).samples_tokens;
}

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_REQUEST_KIND_H_
