#include "server/service/http/tls_context.h"

#include <utility>

#include "server/base/str_cat.h"

namespace tvq::service::http {
namespace {

namespace asio = boost::asio;
using ::tvq::runtime::StrCat;
using boost::system::error_code;

absl::StatusOr<std::shared_ptr<asio::ssl::context>> MakeTlsContext(
    const auth::TlsMaterial& tls) {
  auto context =
      std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  error_code error;
  context->set_options(asio::ssl::context::default_workarounds |
                           asio::ssl::context::no_sslv2 |
                           asio::ssl::context::no_sslv3 |
                           asio::ssl::context::no_tlsv1 |
                           asio::ssl::context::no_tlsv1_1 |
                           asio::ssl::context::single_dh_use,
                       error);
  if (!error) {
    context->use_certificate_chain(asio::buffer(tls.cert_chain), error);
  }
  if (!error) {
    context->use_private_key(asio::buffer(tls.private_key),
                             asio::ssl::context::pem, error);
  }
  if (!error && tls.mutual()) {
    context->add_certificate_authority(asio::buffer(tls.client_ca), error);
    if (!error) {
      context->set_verify_mode(asio::ssl::verify_peer |
                                   asio::ssl::verify_fail_if_no_peer_cert,
                               error);
    }
  }
  if (error) {
    return absl::InvalidArgumentError(
        StrCat("the HTTP listener's TLS setup failed: ", error.message()));
  }
  return context;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsContextSource>> TlsContextSource::Create(
    const auth::TlsCertificates* certificates) {
  const auth::TlsCertificates::Snapshot current = certificates->Current();
  absl::StatusOr<std::shared_ptr<asio::ssl::context>> context =
      MakeTlsContext(*current.material);
  if (!context.ok()) return context.status();
  return std::unique_ptr<TlsContextSource>(new TlsContextSource(
      certificates, *std::move(context), current.generation));
}

TlsContextSource::TlsContextSource(
    const auth::TlsCertificates* certificates,
    std::shared_ptr<asio::ssl::context> context, uint64_t generation)
    : certificates_(certificates),
      context_(std::move(context)),
      generation_(generation) {}

std::shared_ptr<asio::ssl::context> TlsContextSource::ForNewConnection() {
  const auth::TlsCertificates::Snapshot current = certificates_->Current();
  absl::MutexLock lock(&mutex_);
  if (current.generation != generation_) {
    generation_ = current.generation;
    absl::StatusOr<std::shared_ptr<asio::ssl::context>> context =
        MakeTlsContext(*current.material);
    if (context.ok()) context_ = *std::move(context);
  }
  return context_;
}

}  // namespace tvq::service::http
