// tvq-client: the command-line client and load generator of tvq-server.
//
//   tvq-client [global flags] COMMAND [flags] [args]
//
// Exit status: 0 on success, 1 when a call fails (the gRPC code and message
// are printed on stderr), 2 for a wrong command line (the usage is printed).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "client/client_status.h"
#include "client/command.h"
#include "client/commands.h"
#include "client/flag_set.h"
#include "client/global_options.h"

namespace tvq::client {
namespace {

constexpr char kProgram[] = "tvq-client";
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

std::vector<std::unique_ptr<Command>> AllCommands() {
  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(MakeGenerateCommand());
  commands.push_back(MakeScoreCommand());
  commands.push_back(MakeTokenizeCommand());
  commands.push_back(MakeDetokenizeCommand());
  commands.push_back(MakeInfoCommand());
  commands.push_back(MakeHealthCommand());
  commands.push_back(MakeBenchCommand());
  commands.push_back(MakeSessionCommand());
  return commands;
}

std::string ProgramUsage(
    const std::vector<std::unique_ptr<Command>>& commands) {
  GlobalOptions defaults;
  FlagSet global_flags(
      "[global flags] COMMAND [flags] [args]",
      "Client of tvq-server (tvq.v1.TextGeneration over gRPC). Run "
      "\"tvq-client COMMAND --help\" for a command's flags. Global flags may "
      "also follow the command.");
  DefineGlobalFlags(defaults, global_flags);
  std::string usage = global_flags.Usage(kProgram);
  usage += "\nCommands:\n";
  for (const std::unique_ptr<Command>& command : commands) {
    usage +=
        absl::StrFormat("  %-11s %s\n", command->name(), command->summary());
  }
  return usage;
}

int Main(int argc, char** argv) {
  const std::vector<std::unique_ptr<Command>> commands = AllCommands();
  const std::vector<std::string> args(argv + 1, argv + argc);

  // Global flags before the command name.
  GlobalOptions global;
  FlagSet leading_flags("", "");
  DefineGlobalFlags(global, leading_flags);
  absl::StatusOr<std::vector<std::string>> rest =
      leading_flags.Parse(args, /*stop_at_positional=*/true);
  if (!rest.ok()) {
    absl::FPrintF(stderr, "%s: %s\n\n%s", kProgram, rest.status().message(),
                  ProgramUsage(commands));
    return kExitUsage;
  }
  if (rest->empty()) {
    const bool asked = leading_flags.help_requested();
    absl::FPrintF(asked ? stdout : stderr, "%s%s",
                  asked ? "" : "tvq-client: missing COMMAND\n\n",
                  ProgramUsage(commands));
    return asked ? 0 : kExitUsage;
  }
  const std::string& name = rest->front();
  Command* command = nullptr;
  for (const std::unique_ptr<Command>& candidate : commands) {
    if (candidate->name() == name) command = candidate.get();
  }
  if (command == nullptr) {
    absl::FPrintF(stderr, "%s: unknown command \"%s\"\n\n%s", kProgram, name,
                  ProgramUsage(commands));
    return kExitUsage;
  }

  FlagSet flags(command->synopsis(), command->description());
  command->DefineFlags(flags);
  DefineGlobalFlags(global, flags);
  const std::string program(kProgram);
  absl::StatusOr<std::vector<std::string>> positional =
      flags.Parse(std::vector<std::string>(rest->begin() + 1, rest->end()));
  if (leading_flags.help_requested() || flags.help_requested()) {
    absl::PrintF("%s", flags.Usage(program));
    return 0;
  }
  if (!positional.ok()) {
    absl::FPrintF(stderr, "%s %s: %s\n\n%s", kProgram, name,
                  positional.status().message(), flags.Usage(program));
    return kExitUsage;
  }

  if (absl::Status security = LoadChannelSecurity(global); !security.ok()) {
    absl::FPrintF(stderr, "%s %s: %s\n", kProgram, name, security.message());
    return kExitUsage;
  }
  const absl::Status status = command->Run(global, *positional);
  if (status.ok()) return 0;
  if (IsUsageError(status)) {
    absl::FPrintF(stderr, "%s %s: %s\n\n%s", kProgram, name, status.message(),
                  flags.Usage(program));
    return kExitUsage;
  }
  absl::FPrintF(stderr, "%s %s: %s: %s\n", kProgram, name,
                absl::StatusCodeToString(status.code()), status.message());
  return kExitFailure;
}

}  // namespace
}  // namespace tvq::client

int main(int argc, char** argv) { return tvq::client::Main(argc, argv); }
