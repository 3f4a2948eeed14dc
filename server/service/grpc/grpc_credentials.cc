#include "server/service/grpc/grpc_credentials.h"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/grpc.h"
#include "grpc/grpc_security.h"
#include "grpc/slice.h"

namespace tvq::service {
namespace {

constexpr std::string_view kHealthPrefix = "/grpc.health.v1.Health/";

std::string_view SliceView(const grpc_slice& slice) {
  return std::string_view(
      reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
      GRPC_SLICE_LENGTH(slice));
}

struct KeyCheckState {
  const auth::ApiKeyStore* keys;
  bool exempt_health;
  metrics::AuthObserver* observer;
};

// grpc_auth_metadata_processor::process: answers at once (the check only
// hashes and compares; it never blocks).
void ProcessMetadata(void* state, grpc_auth_context* /*context*/,
                     const grpc_metadata* metadata, size_t count,
                     grpc_process_auth_metadata_done_cb done,
                     void* user_data) {
  const auto& check = *static_cast<const KeyCheckState*>(state);
  const grpc_metadata* authorization = nullptr;
  std::string_view path;
  for (size_t i = 0; i < count; ++i) {
    const std::string_view key = SliceView(metadata[i].key);
    if (key == "authorization" && authorization == nullptr) {
      authorization = &metadata[i];
    } else if (key == ":path") {
      path = SliceView(metadata[i].value);
    }
  }
  if (check.exempt_health && path.substr(0, kHealthPrefix.size()) == kHealthPrefix) {
    done(user_data, authorization, authorization != nullptr ? 1 : 0, nullptr,
         0, GRPC_STATUS_OK, nullptr);
    return;
  }
  const auth::KeyCheck result =
      authorization == nullptr
          ? auth::KeyCheck::kMissing
          : check.keys->CheckAuthorization(SliceView(authorization->value));
  if (result == auth::KeyCheck::kAccepted) {
    // Not consumed: CallerKeyOwner reads it (the auth context cannot carry
    // it, gRPC shares one among the calls of a connection).
    done(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  if (check.observer != nullptr) {
    check.observer->OnAuthFailure("grpc", auth::KeyCheckName(result));
  }
  done(user_data, authorization, authorization != nullptr ? 1 : 0, nullptr, 0,
       GRPC_STATUS_UNAUTHENTICATED,
       result == auth::KeyCheck::kMissing
           ? "missing API key: send the metadata \"authorization: Bearer "
             "KEY\" (docs/security.md)"
           : "invalid API key: the \"authorization\" metadata is not "
             "\"Bearer KEY\" with a key of the server's --api-keys-file");
}

void DestroyState(void* state) { delete static_cast<KeyCheckState*>(state); }

// The certificate fetcher of the TLS credentials: gRPC asks it at start and
// before every new handshake; it hands over a new config only when the
// certificates were reloaded since the last one (SIGHUP).
struct CertificateFetchState {
  explicit CertificateFetchState(const auth::TlsCertificates* certificates)
      : certificates(certificates) {}
  const auth::TlsCertificates* const certificates;
  absl::Mutex mutex;
  // The generation last handed to gRPC; none before the first fetch.
  std::optional<uint64_t> handed ABSL_GUARDED_BY(mutex);
};

grpc_ssl_certificate_config_reload_status FetchCertificates(
    void* user_data, grpc_ssl_server_certificate_config** config) {
  auto& state = *static_cast<CertificateFetchState*>(user_data);
  const auth::TlsCertificates::Snapshot current =
      state.certificates->Current();
  absl::MutexLock lock(&state.mutex);
  if (state.handed == current.generation) {
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  }
  const auth::TlsMaterial& material = *current.material;
  grpc_ssl_pem_key_cert_pair pair;
  pair.private_key = material.private_key.c_str();
  pair.cert_chain = material.cert_chain.c_str();
  // gRPC copies the PEM text and owns the config from here. gRPC 1.51
  // asserts root certificates in a fetched config even when no client
  // certificate is asked for: without --tls-client-ca the server's own
  // chain stands in, unused (no certificate request is ever sent).
  *config = grpc_ssl_server_certificate_config_create(
      material.mutual() ? material.client_ca.c_str()
                        : material.cert_chain.c_str(),
      &pair, 1);
  state.handed = current.generation;
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

// grpc::ServerCredentials around credentials made with gRPC's C API; the
// server adds its port (ServerBuilder's external acceptor too) through
// AddPortToServer.
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  CoreServerCredentials(grpc_server_credentials* credentials,
                        std::unique_ptr<CertificateFetchState> fetch)
      : credentials_(credentials), fetch_(std::move(fetch)) {}
  ~CoreServerCredentials() override {
    grpc_server_credentials_release(credentials_);
  }

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    // The processor is set on the C credentials at creation.
  }

 private:
  int AddPortToServer(const std::string& address,
                      grpc_server* server) override {
    return grpc_server_add_http2_port(server, address.c_str(), credentials_);
  }

  grpc_server_credentials* const credentials_;
  // The certificate fetcher's data (TLS only): gRPC calls the fetcher with
  // it for as long as the server runs.
  const std::unique_ptr<CertificateFetchState> fetch_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const GrpcSecurityOptions& options) {
  if (options.tls == nullptr && options.keys == nullptr) {
    return grpc::InsecureServerCredentials();
  }
  grpc_server_credentials* credentials = nullptr;
  std::unique_ptr<CertificateFetchState> fetch;
  if (options.tls != nullptr) {
    fetch = std::make_unique<CertificateFetchState>(options.tls);
    credentials = grpc_ssl_server_credentials_create_with_options(
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            options.tls->mutual()
                ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            FetchCertificates, fetch.get()));
  } else {
    credentials = grpc_insecure_server_credentials_create();
  }
  if (options.keys != nullptr) {
    grpc_auth_metadata_processor processor;
    processor.process = ProcessMetadata;
    processor.destroy = DestroyState;
    processor.state = new KeyCheckState{options.keys, options.exempt_health,
                                        options.observer};
    grpc_server_credentials_set_auth_metadata_processor(credentials,
                                                        processor);
  }
  return std::make_shared<CoreServerCredentials>(credentials,
                                                 std::move(fetch));
}

std::string CallerKeyOwner(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  const auto authorization = metadata.find("authorization");
  if (authorization == metadata.end()) return "";
  return auth::KeyOwnerOfAuthorization(std::string_view(
      authorization->second.data(), authorization->second.size()));
}

}  // namespace tvq::service
