// Flags every tvq-client subcommand accepts, and the channel and call
// settings they imply.
#ifndef TVQ_CLIENT_GLOBAL_OPTIONS_H_
#define TVQ_CLIENT_GLOBAL_OPTIONS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
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

  // TLS (docs/client.md, docs/security.md): any of these set = TLS.
  // tls_ca: PEM CA bundle that signed the server's certificate (empty =
  // the system's roots); tls_cert + tls_key: a client certificate for
  // mutual TLS; tls_server_name: the name to check the certificate
  // against instead of the host of addr.
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  // A file whose first line is the API key, sent as "authorization:
  // Bearer KEY" on every call; without it, the TVQ_API_KEY environment
  // variable.
  std::string api_key_file;

  // Filled by LoadChannelSecurity: the files' contents and the key.
  bool tls = false;
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
  std::string api_key;
};

// Registers --addr, --timeout, --json, the TLS flags and --api-key-file
// under a "Global flags" heading.
void DefineGlobalFlags(GlobalOptions& options, FlagSet& flags);

// Reads the TLS files and the API key the flags name (and TVQ_API_KEY);
// errors name the flag and the problem.
absl::Status LoadChannelSecurity(GlobalOptions& options);

// A channel to options.addr: TLS when a TLS flag is set, else plaintext;
// with an API key, every call carries it. `private_connection` gives the
// channel its own connection instead of sharing one with other channels to
// the same address (the load generator spreads streams over several).
std::shared_ptr<grpc::Channel> MakeChannel(const GlobalOptions& options,
                                           bool private_connection = false);

// Sets the call deadline from options.timeout_seconds (none when 0).
void ApplyTimeout(const GlobalOptions& options, grpc::ClientContext& context);

}  // namespace tvq::client

#endif  // TVQ_CLIENT_GLOBAL_OPTIONS_H_
