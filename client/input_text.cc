#include "client/input_text.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/client_status.h"

namespace tvq::client {

absl::StatusOr<std::string> ReadFileOrStdin(const std::string& path) {
  if (path == "-") {
    std::ostringstream text;
    text << std::cin.rdbuf();
    if (std::cin.bad()) {
      return absl::DataLossError("cannot read stdin");
    }
    return text.str();
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::string text((std::istreambuf_iterator<char>(file)),
                   std::istreambuf_iterator<char>());
  if (file.bad()) {
    return absl::DataLossError(absl::StrCat("cannot read ", path));
  }
  return text;
}

absl::StatusOr<std::string> ReadInputText(const std::vector<std::string>& args,
                                          const std::string& file) {
  if (args.size() > 1) {
    return UsageError(absl::StrCat("expected one text argument, got ",
                                   args.size(),
                                   " (quote text that contains spaces)"));
  }
  if (!file.empty()) {
    if (!args.empty()) {
      return UsageError(
          "give the text either as an argument or with --file, "
          "not both");
    }
    return ReadFileOrStdin(file);
  }
  if (args.empty() || args[0] == "-") return ReadFileOrStdin("-");
  return args[0];
}

}  // namespace tvq::client
