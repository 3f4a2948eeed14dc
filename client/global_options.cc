#include "client/global_options.h"

#include <chrono>

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace tvq::client {

void DefineGlobalFlags(GlobalOptions& options, FlagSet& flags) {
  flags.AddSection("Global flags");
  flags.Add("addr", &options.addr, "HOST:PORT",
            "Address of the tvq-server gRPC endpoint.");
  flags.Add("timeout", &options.timeout_seconds, "SECONDS",
            "Deadline of each call in seconds; 0 = no deadline. A call that "
            "runs past it fails with DEADLINE_EXCEEDED.");
  flags.Add("json", &options.json, "",
            "Print the result as one JSON object on stdout instead of text.");
}

std::shared_ptr<grpc::Channel> MakeChannel(const GlobalOptions& options,
                                           bool private_connection) {
  grpc::ChannelArguments arguments;
  // Generated text can be long; accept large messages.
  arguments.SetMaxReceiveMessageSize(-1);
  if (private_connection) {
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  return grpc::CreateCustomChannel(
      options.addr, grpc::InsecureChannelCredentials(), arguments);
}

void ApplyTimeout(const GlobalOptions& options, grpc::ClientContext& context) {
  if (options.timeout_seconds <= 0) return;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::duration<double>(options.timeout_seconds)));
}

}  // namespace tvq::client
