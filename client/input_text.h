// Where a command's text comes from: an argument, a file, or stdin.
#ifndef TVQ_CLIENT_INPUT_TEXT_H_
#define TVQ_CLIENT_INPUT_TEXT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tvq::client {

// The whole content of `path` ("-" = stdin). Errors name the file.
absl::StatusOr<std::string> ReadFileOrStdin(const std::string& path);

// The text a command works on, from exactly one source: `file` (when
// non-empty; "-" = stdin), the single positional argument (which may be
// "-" for stdin), or stdin when there is neither. More than one source, or
// more than one positional argument, is a UsageError.
absl::StatusOr<std::string> ReadInputText(const std::vector<std::string>& args,
                                          const std::string& file);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_INPUT_TEXT_H_
