// The subcommands of tvq-client, one factory per command (each in its own
// NAME_command.cc).
#ifndef TVQ_CLIENT_COMMANDS_H_
#define TVQ_CLIENT_COMMANDS_H_

#include <memory>

#include "client/command.h"

namespace tvq::client {

std::unique_ptr<Command> MakeGenerateCommand();
std::unique_ptr<Command> MakeScoreCommand();
std::unique_ptr<Command> MakeTokenizeCommand();
std::unique_ptr<Command> MakeDetokenizeCommand();
std::unique_ptr<Command> MakeInfoCommand();
std::unique_ptr<Command> MakeHealthCommand();
std::unique_ptr<Command> MakeBenchCommand();
std::unique_ptr<Command> MakeSessionCommand();

}  // namespace tvq::client

#endif  // TVQ_CLIENT_COMMANDS_H_
