// One tvq-client subcommand: its flags, its usage text and what it does.
#ifndef TVQ_CLIENT_COMMAND_H_
#define TVQ_CLIENT_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/flag_set.h"
#include "client/global_options.h"

namespace tvq::client {

class Command {
 public:
  virtual ~Command() = default;

  // The word that selects the command ("generate").
  virtual std::string name() const = 0;
  // One line for the program's command list.
  virtual std::string summary() const = 0;
  // Usage line after the program name ("generate [flags] PROMPT").
  virtual std::string synopsis() const = 0;
  // Paragraphs (separated by blank lines) for the command's --help.
  virtual std::string description() const = 0;

  // Registers the command's own flags, bound to its members.
  virtual void DefineFlags(FlagSet& flags) = 0;

  // Runs the command once its flags are parsed. `args` are the positional
  // arguments. Errors from the server keep their gRPC code (client_status.h);
  // a wrong command line is a UsageError.
  virtual absl::Status Run(const GlobalOptions& global,
                           const std::vector<std::string>& args) = 0;
};

}  // namespace tvq::client

#endif  // TVQ_CLIENT_COMMAND_H_
