// Strict typed access to the fields of a JSON request object. A field that
// is absent or null reads as nullopt; a field of the wrong type, or a number
// out of the type's range, is a 400 naming the field (InvalidField), e.g.
// "temperature must be a number, got \"hot\"". Every key a reader did not
// read is reported by RejectUnknown, so that no field is silently ignored.
#ifndef TVQ_SERVER_SERVICE_HTTP_JSON_FIELDS_H_
#define TVQ_SERVER_SERVICE_HTTP_JSON_FIELDS_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tvq::service::http {

// Parses a request body: syntax errors and duplicate keys are 400s; the top
// level must be an object.
absl::StatusOr<nlohmann::json> ParseRequestBody(std::string_view body);

class JsonFields {
 public:
  // `object` must be a JSON object and outlive the reader; `prefix` is put
  // before every field name in messages ("messages[2]." for nested ones).
  JsonFields(const nlohmann::json& object, std::string prefix);

  // The full name of `key` as messages print it.
  std::string Name(std::string_view key) const;

  absl::StatusOr<std::optional<bool>> Bool(std::string_view key);
  // JSON integers in [min, max] (32-bit range by default).
  absl::StatusOr<std::optional<int64_t>> Int(std::string_view key,
                                             int64_t min = INT32_MIN,
                                             int64_t max = INT32_MAX);
  // Unsigned 64-bit integers (seeds).
  absl::StatusOr<std::optional<uint64_t>> Uint64(std::string_view key);
  // Integers or floats, finite.
  absl::StatusOr<std::optional<double>> Number(std::string_view key);
  absl::StatusOr<std::optional<std::string>> String(std::string_view key);
  // Any value (null is returned as nullptr); the caller checks its type.
  const nlohmann::json* Raw(std::string_view key);

  // 400 for the first key nobody read.
  absl::Status RejectUnknown() const;

 private:
  const nlohmann::json* Find(std::string_view key);

  const nlohmann::json& object_;
  const std::string prefix_;
  std::set<std::string, std::less<>> read_;
};

// "must be a T, got <value>" for field `name`.
absl::Status WrongType(std::string_view name, std::string_view expected,
                       const nlohmann::json& value);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_JSON_FIELDS_H_
