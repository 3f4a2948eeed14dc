#include "client/flag_set.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tvq::client {
namespace {

constexpr size_t kUsageWidth = 78;
constexpr size_t kHelpIndent = 6;

// Appends `text` to `out`, wrapped at kUsageWidth, every line indented by
// kHelpIndent spaces.
void AppendWrapped(const std::string& text, std::string& out) {
  const std::string indent(kHelpIndent, ' ');
  size_t line_length = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (line_length > 0 && line_length + 1 + word.size() > kUsageWidth) {
      out += "\n";
      line_length = 0;
    }
    if (line_length == 0) {
      out += indent;
      line_length = indent.size();
    } else {
      out += " ";
      ++line_length;
    }
    absl::StrAppend(&out, word);
    line_length += word.size();
  }
  out += "\n";
}

std::string DefaultText(const FlagTarget& target) {
  struct Visitor {
    std::string operator()(bool* value) const { return *value ? "true" : ""; }
    std::string operator()(int32_t* value) const {
      return absl::StrCat(*value);
    }
    std::string operator()(int64_t* value) const {
      return absl::StrCat(*value);
    }
    std::string operator()(double* value) const { return absl::StrCat(*value); }
    std::string operator()(float* value) const { return absl::StrCat(*value); }
    std::string operator()(std::string* value) const {
      return value->empty() ? "" : absl::StrCat("\"", *value, "\"");
    }
    std::string operator()(std::optional<int32_t>* value) const {
      return value->has_value() ? absl::StrCat(**value) : "";
    }
    std::string operator()(std::optional<uint64_t>* value) const {
      return value->has_value() ? absl::StrCat(**value) : "";
    }
    std::string operator()(std::optional<float>* value) const {
      return value->has_value() ? absl::StrCat(**value) : "";
    }
    std::string operator()(std::vector<int32_t>* value) const {
      return absl::StrJoin(*value, ",");
    }
    std::string operator()(std::vector<std::string>* value) const {
      return absl::StrJoin(*value, ", ");
    }
  };
  return std::visit(Visitor{}, target);
}

absl::Status BadValue(const std::string& name, const std::string& value,
                      const char* expected) {
  return absl::InvalidArgumentError(absl::StrCat("invalid value for --", name,
                                                 ": \"", value, "\" (expected ",
                                                 expected, ")"));
}

absl::StatusOr<bool> ParseBool(const std::string& name,
                               const std::string& value) {
  const std::string lower = absl::AsciiStrToLower(value);
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  return BadValue(name, value, "true or false");
}

// Stores `value` into `target`. Errors name the flag and the value.
absl::Status Assign(const std::string& name, const FlagTarget& target,
                    const std::string& value) {
  struct Visitor {
    const std::string& name;
    const std::string& value;
    absl::Status operator()(bool* out) const {
      absl::StatusOr<bool> parsed = ParseBool(name, value);
      if (!parsed.ok()) return parsed.status();
      *out = *parsed;
      return absl::OkStatus();
    }
    absl::Status operator()(int32_t* out) const {
      if (!absl::SimpleAtoi(value, out)) {
        return BadValue(name, value, "a 32-bit integer");
      }
      return absl::OkStatus();
    }
    absl::Status operator()(int64_t* out) const {
      if (!absl::SimpleAtoi(value, out)) {
        return BadValue(name, value, "an integer");
      }
      return absl::OkStatus();
    }
    absl::Status operator()(double* out) const {
      if (!absl::SimpleAtod(value, out)) {
        return BadValue(name, value, "a number");
      }
      return absl::OkStatus();
    }
    absl::Status operator()(float* out) const {
      if (!absl::SimpleAtof(value, out)) {
        return BadValue(name, value, "a number");
      }
      return absl::OkStatus();
    }
    absl::Status operator()(std::string* out) const {
      *out = value;
      return absl::OkStatus();
    }
    absl::Status operator()(std::optional<int32_t>* out) const {
      int32_t parsed = 0;
      if (!absl::SimpleAtoi(value, &parsed)) {
        return BadValue(name, value, "a 32-bit integer");
      }
      *out = parsed;
      return absl::OkStatus();
    }
    absl::Status operator()(std::optional<uint64_t>* out) const {
      uint64_t parsed = 0;
      if (value.empty() || value[0] == '-' ||
          !absl::SimpleAtoi(value, &parsed)) {
        return BadValue(name, value, "an unsigned 64-bit integer");
      }
      *out = parsed;
      return absl::OkStatus();
    }
    absl::Status operator()(std::optional<float>* out) const {
      float parsed = 0;
      if (!absl::SimpleAtof(value, &parsed)) {
        return BadValue(name, value, "a number");
      }
      *out = parsed;
      return absl::OkStatus();
    }
    absl::Status operator()(std::vector<int32_t>* out) const {
      absl::StatusOr<std::vector<int32_t>> ids = ParseTokenIdList(value);
      if (!ids.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "invalid value for --", name, ": ", ids.status().message()));
      }
      out->insert(out->end(), ids->begin(), ids->end());
      return absl::OkStatus();
    }
    absl::Status operator()(std::vector<std::string>* out) const {
      out->push_back(value);
      return absl::OkStatus();
    }
  };
  return std::visit(Visitor{name, value}, target);
}

}  // namespace

FlagSet::FlagSet(std::string synopsis, std::string description)
    : synopsis_(std::move(synopsis)),
      description_(std::move(description)),
      sections_{"Flags"} {}

void FlagSet::AddSection(std::string title) {
  sections_.push_back(std::move(title));
}

void FlagSet::Add(std::string name, FlagTarget target, std::string value_name,
                  std::string help) {
  std::string default_text = DefaultText(target);
  flags_.push_back(Flag{std::move(name), target, std::move(value_name),
                        std::move(help), std::move(default_text),
                        sections_.size() - 1});
}

const FlagSet::Flag* FlagSet::Find(const std::string& name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

absl::StatusOr<std::vector<std::string>> FlagSet::Parse(
    const std::vector<std::string>& args, bool stop_at_positional) {
  std::vector<std::string> positional;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      positional.insert(positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (stop_at_positional) {
        positional.insert(positional.end(), args.begin() + i, args.end());
        break;
      }
      positional.push_back(arg);
      continue;
    }
    if (arg[1] != '-') {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag ", arg, " (flags are written --name or --name=value)"));
    }
    const size_t equals = arg.find('=');
    const std::string name = arg.substr(2, equals - 2);
    const Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    std::string value;
    if (equals != std::string::npos) {
      value = arg.substr(equals + 1);
    } else if (std::holds_alternative<bool*>(flag->target)) {
      value = "true";
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "flag --", name, " needs a value (", flag->value_name, ")"));
    }
    absl::Status assigned = Assign(name, flag->target, value);
    if (!assigned.ok()) return assigned;
  }
  return positional;
}

std::string FlagSet::Usage(const std::string& program) const {
  std::string out = absl::StrCat("usage: ", program, " ", synopsis_, "\n\n");
  if (!description_.empty()) {
    for (absl::string_view paragraph : absl::StrSplit(description_, "\n\n")) {
      std::string wrapped;
      AppendWrapped(std::string(paragraph), wrapped);
      // Descriptions are indented by 2, not by the help indent.
      for (absl::string_view line :
           absl::StrSplit(wrapped, '\n', absl::SkipEmpty())) {
        absl::StrAppend(&out, "  ", absl::StripLeadingAsciiWhitespace(line),
                        "\n");
      }
      out += "\n";
    }
  }
  for (size_t section = 0; section < sections_.size(); ++section) {
    bool header_written = false;
    for (const Flag& flag : flags_) {
      if (flag.section != section) continue;
      if (!header_written) {
        absl::StrAppend(&out, sections_[section], ":\n");
        header_written = true;
      }
      absl::StrAppend(&out, "  --", flag.name);
      if (!std::holds_alternative<bool*>(flag.target)) {
        absl::StrAppend(&out, "=", flag.value_name);
      }
      out += "\n";
      std::string help = flag.help;
      if (!flag.default_text.empty()) {
        absl::StrAppend(&help, " (default: ", flag.default_text, ")");
      }
      AppendWrapped(help, out);
    }
    if (header_written) out += "\n";
  }
  absl::StrAppend(&out, "  -h, --help\n");
  AppendWrapped("Prints this text and exits.", out);
  return out;
}

absl::StatusOr<std::vector<int32_t>> ParseTokenIdList(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view item :
       absl::StrSplit(text, absl::ByAnyChar(", \t\n"), absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(item, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", item, "\" is not a token id (a 32-bit integer)"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace tvq::client
