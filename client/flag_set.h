// Command-line flags of one tvq-client subcommand: typed bindings to
// variables the caller owns, parsing, and the usage text that documents
// every flag.
//
// Accepted forms: `--name=value`, `--name value`, and for booleans `--name`
// (true) or `--name=true|false`. A list flag (`std::vector<int32_t>`) takes
// comma-separated ids and may repeat; a `std::vector<std::string>` flag
// collects one value per occurrence. `--` ends the flags; `-` alone is a
// positional argument (stdin). `-h` and `--help` ask for the usage text.
#ifndef TVQ_CLIENT_FLAG_SET_H_
#define TVQ_CLIENT_FLAG_SET_H_

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace tvq::client {

// Where a flag's parsed value goes. An unset std::optional means "not given
// on the command line" (the server's default applies).
using FlagTarget =
    std::variant<bool*, int32_t*, int64_t*, double*, float*, std::string*,
                 std::optional<int32_t>*, std::optional<uint64_t>*,
                 std::optional<float>*, std::vector<int32_t>*,
                 std::vector<std::string>*>;

class FlagSet {
 public:
  // `synopsis`: the usage line after the program name, e.g.
  // "generate [flags] PROMPT". `description`: what the command does.
  FlagSet(std::string synopsis, std::string description);

  // Starts a new heading in the usage text ("Flags" before the first call).
  void AddSection(std::string title);

  // Registers `--name`. `value_name` names the value in the usage text
  // (e.g. "FLOAT"; ignored for booleans). The target's current value is
  // shown as the default, unless it is false, empty or unset.
  void Add(std::string name, FlagTarget target, std::string value_name,
           std::string help);

  // Parses `args` (no program name). Returns the positional arguments.
  // With `stop_at_positional`, parsing stops at the first positional
  // argument, which is returned with everything after it unparsed.
  // Errors are InvalidArgument and name the flag and the value.
  absl::StatusOr<std::vector<std::string>> Parse(
      const std::vector<std::string>& args, bool stop_at_positional = false);

  bool help_requested() const { return help_requested_; }

  // "usage: PROGRAM SYNOPSIS", the description and every flag with its help.
  std::string Usage(const std::string& program) const;

 private:
  struct Flag {
    std::string name;
    FlagTarget target;
    std::string value_name;
    std::string help;
    std::string default_text;
    size_t section;
  };

  const Flag* Find(const std::string& name) const;

  std::string synopsis_;
  std::string description_;
  std::vector<std::string> sections_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

// Parses "1,72,101" (commas and/or whitespace between ids) into ids.
// Errors name the offending item.
absl::StatusOr<std::vector<int32_t>> ParseTokenIdList(const std::string& text);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_FLAG_SET_H_
