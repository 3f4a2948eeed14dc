// Status propagation helpers used everywhere above kernels/.
#ifndef TVQ_SERVER_BASE_STATUS_MACROS_H_
#define TVQ_SERVER_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns from the enclosing function when `expr` yields a non-OK status.
#define TVQ_RETURN_IF_ERROR(expr)                \
  do {                                           \
    ::absl::Status tvq_status_ = (expr);         \
    if (!tvq_status_.ok()) return tvq_status_;   \
  } while (false)

#define TVQ_STATUS_CONCAT_INNER_(a, b) a##b
#define TVQ_STATUS_CONCAT_(a, b) TVQ_STATUS_CONCAT_INNER_(a, b)

// `TVQ_ASSIGN_OR_RETURN(auto value, MakeValue());` assigns the value of a
// StatusOr or returns its error.
#define TVQ_ASSIGN_OR_RETURN(lhs, expr) \
  TVQ_ASSIGN_OR_RETURN_IMPL_(TVQ_STATUS_CONCAT_(tvq_statusor_, __LINE__), lhs, expr)
#define TVQ_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  if (!statusor.ok()) return statusor.status();         \
  lhs = std::move(statusor).value()

#endif  // TVQ_SERVER_BASE_STATUS_MACROS_H_
