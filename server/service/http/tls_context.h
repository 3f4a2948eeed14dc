// The HTTPS listener's OpenSSL setup: an asio::ssl::context (TLS 1.2 or
// later; for mutual TLS the client CA, a certificate required and
// verified) made from auth::TlsCertificates, and made again at the first
// connection after the certificates were reloaded (SIGHUP), so new
// connections present the new certificate. Internal to the HTTP front end.
#ifndef TVQ_SERVER_SERVICE_HTTP_TLS_CONTEXT_H_
#define TVQ_SERVER_SERVICE_HTTP_TLS_CONTEXT_H_

#include <cstdint>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "boost/asio/ssl/context.hpp"
#include "server/auth/tls_certificates.h"

namespace tvq::service::http {

class TlsContextSource {
 public:
  // Fails (naming the HTTP listener) when OpenSSL refuses the material.
  static absl::StatusOr<std::unique_ptr<TlsContextSource>> Create(
      const auth::TlsCertificates* certificates);

  // The context for a new connection, which keeps it for its lifetime. When
  // a reloaded material cannot be set up (it passed LoadTlsMaterial's
  // checks, so hardly ever), the previous context stays in use.
  std::shared_ptr<boost::asio::ssl::context> ForNewConnection();

 private:
  TlsContextSource(const auth::TlsCertificates* certificates,
                   std::shared_ptr<boost::asio::ssl::context> context,
                   uint64_t generation);

  const auth::TlsCertificates* const certificates_;
  absl::Mutex mutex_;
  std::shared_ptr<boost::asio::ssl::context> context_ ABSL_GUARDED_BY(mutex_);
  // The generation context_ was made from (or last tried).
  uint64_t generation_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_TLS_CONTEXT_H_
