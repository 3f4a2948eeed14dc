// The credentials of tvq-server's gRPC listener: plaintext or TLS
// (--tls-cert/--tls-key; --tls-client-ca = mutual TLS, a client without a
// certificate that CA signed fails the handshake; the files are re-read on
// SIGHUP and new connections get the new ones), and, with
// --api-keys-file, an API key check on every call (docs/security.md).
//
// The key check is gRPC's auth metadata processor, which runs in the
// transport before any service sees the call, so it covers every service on
// the port alike: tvq.v1.TextGeneration, server reflection, and
// grpc.health.v1.Health unless `exempt_health`. A call without
// "authorization: Bearer KEY" metadata, or with a key the store does not
// hold, ends UNAUTHENTICATED. The "authorization" entry of a refused call
// is consumed; an accepted call keeps it for CallerKeyOwner (the per-key
// limits), the only reader: no handler or log uses it otherwise. gRPC C++ offers the processor only on TLS
// credentials, so the credentials are built with gRPC's C API (plaintext
// or TLS) and wrapped here.
#ifndef TVQ_SERVER_SERVICE_GRPC_GRPC_CREDENTIALS_H_
#define TVQ_SERVER_SERVICE_GRPC_GRPC_CREDENTIALS_H_

#include <memory>
#include <optional>
#include <string>

#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"
#include "server/auth/api_key_store.h"
#include "server/auth/tls_certificates.h"
#include "server/metrics/auth_metrics.h"

namespace tvq::service {

struct GrpcSecurityOptions {
  // null = plaintext. Asked before every handshake, so a reload (SIGHUP)
  // reaches new connections. Must outlive the server.
  const auth::TlsCertificates* tls = nullptr;
  // null = no key check. Must outlive the server.
  const auth::ApiKeyStore* keys = nullptr;
  // grpc.health.v1.Health answers without a key.
  bool exempt_health = false;
  // Told of every refused call (may be null). Must outlive the server.
  metrics::AuthObserver* observer = nullptr;
};

// With TLS the credentials carry the certificate fetcher that gRPC calls
// before every handshake: keep them until the server is destroyed.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const GrpcSecurityOptions& options);

// The auth::KeyOwnerId of the key a call carries ("" without one). Only
// meaningful on a server with keys, where every call that reaches a
// handler was accepted.
std::string CallerKeyOwner(const grpc::ServerContextBase& context);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_GRPC_CREDENTIALS_H_
