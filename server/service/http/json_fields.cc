#include "server/service/http/json_fields.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "server/base/str_cat.h"
#include "server/base/strict_json.h"
#include "server/service/http/http_errors.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;

namespace {

// Arrays and objects nested deeper than this are refused before parsing:
// no request needs more, and deep values would make the recursive parts
// of nlohmann (dump, comparisons) overflow the stack.
constexpr int kMaxJsonDepth = 64;

// The deepest nesting of arrays and objects in `text` (strings skipped).
int JsonDepth(std::string_view text) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

absl::StatusOr<nlohmann::json> ParseRequestBody(std::string_view body) {
  if (JsonDepth(body) > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        StrCat("the request body nests arrays and objects deeper than ",
               kMaxJsonDepth, " levels"));
  }
  absl::StatusOr<nlohmann::json> parsed = runtime::ParseStrictJson(
      body, absl::StatusCode::kInvalidArgument, "the request body");
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) {
    return absl::InvalidArgumentError(
        StrCat("the request body must be a JSON object, got ",
               runtime::JsonTypeName(*parsed)));
  }
  return parsed;
}

absl::Status WrongType(std::string_view name, std::string_view expected,
                       const nlohmann::json& value) {
  return InvalidField(name, StrCat(name, " must be ", expected, ", got ",
                                   runtime::DescribeJson(value)));
}

JsonFields::JsonFields(const nlohmann::json& object, std::string prefix)
    : object_(object), prefix_(std::move(prefix)) {}

std::string JsonFields::Name(std::string_view key) const {
  return StrCat(prefix_, key);
}

const nlohmann::json* JsonFields::Find(std::string_view key) {
  read_.emplace(key);
  auto it = object_.find(std::string(key));
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

const nlohmann::json* JsonFields::Raw(std::string_view key) {
  return Find(key);
}

absl::StatusOr<std::optional<bool>> JsonFields::Bool(std::string_view key) {
  const nlohmann::json* value = Find(key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_boolean()) return WrongType(Name(key), "a boolean", *value);
  return value->get<bool>();
}

absl::StatusOr<std::optional<int64_t>> JsonFields::Int(std::string_view key,
                                                       int64_t min,
                                                       int64_t max) {
  const nlohmann::json* value = Find(key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number_integer()) {
    return WrongType(Name(key), "an integer", *value);
  }
  if (value->is_number_unsigned() &&
      value->get<uint64_t>() >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return InvalidField(
        Name(key), StrCat(Name(key), " must be in [", min, ", ", max, "], got ",
                          value->get<uint64_t>()));
  }
  const int64_t number = value->get<int64_t>();
  if (number < min || number > max) {
    return InvalidField(Name(key), StrCat(Name(key), " must be in [", min, ", ",
                                          max, "], got ", number));
  }
  return number;
}

absl::StatusOr<std::optional<uint64_t>> JsonFields::Uint64(
    std::string_view key) {
  const nlohmann::json* value = Find(key);
  if (value == nullptr) return std::nullopt;
  if (value->is_number_unsigned()) return value->get<uint64_t>();
  if (value->is_number_integer()) {
    return InvalidField(Name(key),
                        StrCat(Name(key), " must be in [0, 2^64 - 1], got ",
                               value->get<int64_t>()));
  }
  return WrongType(Name(key), "an integer", *value);
}

absl::StatusOr<std::optional<double>> JsonFields::Number(std::string_view key) {
  const nlohmann::json* value = Find(key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_number()) return WrongType(Name(key), "a number", *value);
  const double number = value->get<double>();
  if (!std::isfinite(number)) {
    return WrongType(Name(key), "a finite number", *value);
  }
  return number;
}

absl::StatusOr<std::optional<std::string>> JsonFields::String(
    std::string_view key) {
  const nlohmann::json* value = Find(key);
  if (value == nullptr) return std::nullopt;
  if (!value->is_string()) return WrongType(Name(key), "a string", *value);
  return value->get<std::string>();
}

absl::Status JsonFields::RejectUnknown() const {
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (read_.find(it.key()) == read_.end()) {
      return InvalidField(
          Name(it.key()),
          StrCat("unknown field ", Name(it.key()),
                 ": this server does not support it (docs/http.md "
                 "lists the fields it accepts)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tvq::service::http
