// Flags every tvq-client subcommand accepts, and the channel and call
// settings they imply.
#ifndef TVQ_CLIENT_GLOBAL_OPTIONS_H_
#define TVQ_CLIENT_GLOBAL_OPTIONS_H_

#include <memory>
#include <string>

#include "client/flag_set.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"

namespace tvq::client {

struct GlobalOptions {
  // Server address HOST:PORT (any gRPC target string works).
  std::string addr = "127.0.0.1:50051";
  // Deadline of each call in seconds; 0 = none.
  double timeout_seconds = 0;
  // Print results as JSON on stdout.
  bool json = false;
};

// Registers --addr, --timeout and --json under a "Global flags" heading.
void DefineGlobalFlags(GlobalOptions& options, FlagSet& flags);

// An insecure channel to options.addr. `private_connection` gives the
// channel its own connection instead of sharing one with other channels to
// the same address (the load generator spreads streams over several).
std::shared_ptr<grpc::Channel> MakeChannel(const GlobalOptions& options,
                                           bool private_connection = false);

// Sets the call deadline from options.timeout_seconds (none when 0).
void ApplyTimeout(const GlobalOptions& options, grpc::ClientContext& context);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_GLOBAL_OPTIONS_H_
