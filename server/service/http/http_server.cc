#include "server/service/http/http_server.h"

#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/strand.hpp"
#include "server/base/str_cat.h"
#include "server/service/http/http_session.h"
#include "server/service/http/tls_context.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

}  // namespace

struct HttpServer::Impl {
  asio::io_context io_context;
  tcp::acceptor acceptor{io_context};
  std::shared_ptr<ServerShared> shared = std::make_shared<ServerShared>();
  std::vector<std::thread> threads;
  std::string address;
  bool stopped = false;

  void Accept() {
    acceptor.async_accept(
        asio::make_strand(io_context),
        [this](error_code error, tcp::socket socket) {
          if (error == asio::error::operation_aborted || !acceptor.is_open()) {
            return;
          }
          const int cap = shared->options.max_connections;
          if (!error && cap > 0 &&
              shared->open_connections.load(std::memory_order_relaxed) >=
                  cap) {
            // Over --max-connections: closed as it arrives, as over gRPC.
            error_code ignored;
            socket.close(ignored);
          } else if (!error) {
            error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            StartHttpSession(std::move(socket), shared);
          }
          // Other errors (too many open files, ...) concern one connection.
          Accept();
        });
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, HttpHandler* handler,
    metrics::HttpObserver* observer) {
  const size_t colon = options.address.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(options.address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(StrCat(
        "the HTTP address must be HOST:PORT, got \"", options.address, "\""));
  }
  std::string host = options.address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (options.threads < 1) {
    return absl::InvalidArgumentError("the HTTP server needs >= 1 thread");
  }
  auto impl = std::make_unique<Impl>();
  impl->shared->options = options;
  impl->shared->handler = handler;
  impl->shared->observer = observer;
  if (options.tls != nullptr) {
    absl::StatusOr<std::unique_ptr<TlsContextSource>> tls =
        TlsContextSource::Create(options.tls);
    if (!tls.ok()) return tls.status();
    impl->shared->tls = *std::move(tls);
  }
  error_code error;
  tcp::resolver resolver(impl->io_context);
  const auto endpoints = resolver.resolve(
      host.empty() ? "0.0.0.0" : host, std::to_string(port),
      tcp::resolver::passive | tcp::resolver::numeric_service, error);
  if (error || endpoints.empty()) {
    return absl::InvalidArgumentError(StrCat("cannot resolve the HTTP host \"",
                                             host, "\": ", error.message()));
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  tcp::acceptor& acceptor = impl->acceptor;
  acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(tcp::acceptor::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    return absl::UnavailableError(
        StrCat("cannot listen on ", options.address, ": ", error.message()));
  }
  const tcp::endpoint bound = acceptor.local_endpoint();
  const std::string bound_host = bound.address().to_string();
  impl->address = bound.address().is_v6()
                      ? StrCat("[", bound_host, "]:", bound.port())
                      : StrCat(bound_host, ":", bound.port());
  impl->Accept();
  Impl* raw = impl.get();
  for (int i = 0; i < options.threads; ++i) {
    impl->threads.emplace_back([raw] { raw->io_context.run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

const std::string& HttpServer::address() const { return impl_->address; }

bool HttpServer::WaitForIdle(absl::Time deadline) {
  return impl_->shared->WaitForIdle(deadline);
}

void HttpServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  asio::post(impl_->io_context, [impl = impl_.get()] {
    error_code ignored;
    impl->acceptor.close(ignored);
  });
  // Connections still open (idle keep-alive ones) are dropped with the
  // io_context's pending handlers.
  impl_->io_context.stop();
  for (std::thread& thread : impl_->threads) thread.join();
  impl_->threads.clear();
}

}  // namespace tvq::service::http
