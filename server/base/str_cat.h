// StrCat that also takes std::string_view. Debian builds Abseil with its own
// absl::string_view class (ABSL_OPTION_USE_STD_STRING_VIEW 0), which
// std::string_view does not convert to, so absl::StrCat rejects it.
#ifndef TVQ_SERVER_BASE_STR_CAT_H_
#define TVQ_SERVER_BASE_STR_CAT_H_

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace tvq::runtime {

inline absl::string_view ToAbslStringView(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

namespace str_cat_internal {
template <typename T>
const T& AlphaNumArgument(const T& value) {
  return value;
}
inline absl::string_view AlphaNumArgument(std::string_view text) {
  return ToAbslStringView(text);
}
}  // namespace str_cat_internal

// absl::StrCat(args...), with std::string_view arguments passed through as
// absl::string_view.
template <typename... Args>
std::string StrCat(const Args&... args) {
  return absl::StrCat(str_cat_internal::AlphaNumArgument(args)...);
}

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BASE_STR_CAT_H_
