#include "client/global_options.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/support/client_interceptor.h"
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
  flags.Add("tls-ca", &options.tls_ca, "PEM",
            "Connect over TLS, trusting the CA certificate(s) in this file "
            "(a server started with --tls-cert).");
  flags.Add("tls-cert", &options.tls_cert, "PEM",
            "Client certificate for mutual TLS (a server started with "
            "--tls-client-ca); needs --tls-key.");
  flags.Add("tls-key", &options.tls_key, "PEM",
            "Private key of --tls-cert.");
  flags.Add("tls-server-name", &options.tls_server_name, "NAME",
            "Check the server's certificate against NAME instead of the "
            "host of --addr (implies TLS).");
  flags.Add("api-key-file", &options.api_key_file, "PATH",
            "Send the API key on this file's first line as \"authorization: "
            "Bearer KEY\" (a server started with --api-keys-file); without "
            "it, the TVQ_API_KEY environment variable is used if set.");
}

namespace {

absl::Status ReadFile(const char* flag, const std::string& path,
                      std::string* contents) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  if (file) text << file.rdbuf();
  if (!file || file.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, " cannot be read"));
  }
  *contents = text.str();
  return absl::OkStatus();
}

// Adds "authorization: Bearer KEY" to every call of a channel.
class ApiKeyInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ApiKeyInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;
};

class ApiKeyInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ApiKeyInterceptorFactory(std::string key)
      : value_("Bearer " + std::move(key)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new ApiKeyInterceptor(&value_);
  }

 private:
  const std::string value_;
};

}  // namespace

absl::Status LoadChannelSecurity(GlobalOptions& options) {
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together (a client certificate and its "
        "key)");
  }
  options.tls = !options.tls_ca.empty() || !options.tls_cert.empty() ||
                !options.tls_server_name.empty();
  if (!options.tls_ca.empty()) {
    if (absl::Status read = ReadFile("tls-ca", options.tls_ca,
                                     &options.tls_ca_pem);
        !read.ok()) {
      return read;
    }
  }
  if (!options.tls_cert.empty()) {
    if (absl::Status read = ReadFile("tls-cert", options.tls_cert,
                                     &options.tls_cert_pem);
        !read.ok()) {
      return read;
    }
    if (absl::Status read =
            ReadFile("tls-key", options.tls_key, &options.tls_key_pem);
        !read.ok()) {
      return read;
    }
  }
  std::string key;
  if (!options.api_key_file.empty()) {
    if (absl::Status read =
            ReadFile("api-key-file", options.api_key_file, &key);
        !read.ok()) {
      return read;
    }
    key = key.substr(0, key.find('\n'));
    if (std::string(absl::StripAsciiWhitespace(key)).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--api-key-file=", options.api_key_file,
          " has no key on its first line"));
    }
  } else if (const char* variable = std::getenv("TVQ_API_KEY");
             variable != nullptr) {
    key = variable;
  }
  options.api_key = std::string(absl::StripAsciiWhitespace(key));
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> MakeChannel(const GlobalOptions& options,
                                           bool private_connection) {
  grpc::ChannelArguments arguments;
  // Generated text can be long; accept large messages.
  arguments.SetMaxReceiveMessageSize(-1);
  if (private_connection) {
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options.tls) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = options.tls_ca_pem;
    tls.pem_cert_chain = options.tls_cert_pem;
    tls.pem_private_key = options.tls_key_pem;
    credentials = grpc::SslCredentials(tls);
    if (!options.tls_server_name.empty()) {
      arguments.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  if (options.api_key.empty()) {
    return grpc::CreateCustomChannel(options.addr, credentials, arguments);
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<ApiKeyInterceptorFactory>(options.api_key));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      options.addr, credentials, arguments, std::move(interceptors));
}

void ApplyTimeout(const GlobalOptions& options, grpc::ClientContext& context) {
  if (options.timeout_seconds <= 0) return;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::duration<double>(options.timeout_seconds)));
}

}  // namespace tvq::client
