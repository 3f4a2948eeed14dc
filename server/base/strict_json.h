// JSON parsing for model files: no exceptions escape, duplicate object keys
// are an error (nlohmann would silently keep the last one), and values are
// described briefly for error messages.
#ifndef TVQ_SERVER_BASE_STRICT_JSON_H_
#define TVQ_SERVER_BASE_STRICT_JSON_H_

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/base/str_cat.h"

namespace tvq::runtime {

// Parses `text` as JSON. Syntax errors and duplicate keys (at any depth)
// return a status with `code` whose message starts with `context`.
inline absl::StatusOr<nlohmann::json> ParseStrictJson(
    std::string_view text, absl::StatusCode code, std::string_view context) {
  std::vector<std::set<std::string>> keys_per_open_object;
  std::string duplicate_key;
  auto track_keys = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                        nlohmann::json& parsed) {
    switch (event) {
      case nlohmann::json::parse_event_t::object_start:
        keys_per_open_object.emplace_back();
        break;
      case nlohmann::json::parse_event_t::object_end:
        if (!keys_per_open_object.empty()) keys_per_open_object.pop_back();
        break;
      case nlohmann::json::parse_event_t::key:
        if (!keys_per_open_object.empty() && parsed.is_string() &&
            !keys_per_open_object.back()
                 .insert(parsed.get_ref<const std::string&>())
                 .second &&
            duplicate_key.empty()) {
          duplicate_key = parsed.get_ref<const std::string&>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text.begin(), text.end(), track_keys);
  } catch (const nlohmann::json::exception& error) {
    return absl::Status(code,
                        StrCat(context, " is not valid JSON: ", error.what()));
  }
  if (!duplicate_key.empty()) {
    return absl::Status(code, StrCat(context, " has the key \"", duplicate_key,
                                     "\" more than once"));
  }
  return value;
}

// A short rendering of `value` for messages: its JSON text, cut at 48
// characters.
inline std::string DescribeJson(const nlohmann::json& value) {
  std::string text =
      value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  constexpr size_t kMaxChars = 48;
  if (text.size() > kMaxChars) {
    text.resize(kMaxChars);
    text += "...";
  }
  return text;
}

// "object", "array", "string", "integer", "number", "boolean" or "null".
inline std::string_view JsonTypeName(const nlohmann::json& value) {
  if (value.is_object()) return "object";
  if (value.is_array()) return "array";
  if (value.is_string()) return "string";
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "number";
  if (value.is_boolean()) return "boolean";
  return "null";
}

}  // namespace tvq::runtime

#endif  // TVQ_SERVER_BASE_STRICT_JSON_H_
