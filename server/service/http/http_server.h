// The HTTP/1.1 listener of the OpenAI-compatible front end, on Boost.Beast
// and Boost.Asio: one io_context run by a small fixed number of threads,
// one strand per connection, no thread per connection or stream, so that
// hundreds of concurrent Server-Sent Events streams cost a few kilobytes
// each. Every request is handed to one HttpHandler (the router).
//
// Per connection (http_session.cc): keep-alive; a request must arrive
// within `request_timeout` of the previous response (or of the connect);
// bodies above `max_body_bytes` get 413; each write must finish within
// `write_timeout`; while a request waits for the scheduler, a read stays
// pending on the socket so that a client that disconnects is noticed at once
// (OnClientGone). A stream whose client reads slower than tokens come keeps
// at most `max_pending_stream_bytes` queued; past that the client counts as
// gone (its generation is cancelled, the connection closed).
#ifndef TVQ_SERVER_SERVICE_HTTP_HTTP_SERVER_H_
#define TVQ_SERVER_SERVICE_HTTP_HTTP_SERVER_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/tls_certificates.h"
#include "server/metrics/http_metrics.h"
#include "server/service/http/http_exchange.h"

namespace tvq::service::http {

struct HttpServerOptions {
  // HOST:PORT; port 0 picks a free port (address() tells which).
  std::string address;
  // Threads running the io_context.
  int threads = 2;
  size_t max_body_bytes = size_t{8} << 20;
  size_t max_header_bytes = size_t{16} << 10;
  absl::Duration request_timeout = absl::Seconds(60);
  absl::Duration write_timeout = absl::Seconds(60);
  size_t max_pending_stream_bytes = size_t{1} << 20;
  // Connections open at once (--max-connections); a new one above it is
  // closed as it arrives. 0 = no cap.
  int max_connections = 0;
  // Set: HTTPS only (TLS 1.2 or later, OpenSSL); with a client CA, mutual
  // TLS (a client without a certificate that CA signed fails the handshake
  // and is closed). The handshake must end within request_timeout. Asked
  // at every new connection, so a reload (SIGHUP) reaches new connections;
  // must outlive the server.
  const auth::TlsCertificates* tls = nullptr;
};

class HttpServer {
 public:
  // Listens on options.address and starts the threads. `handler` and
  // `observer` (may be null) must outlive the server.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, HttpHandler* handler,
      metrics::HttpObserver* observer);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // Stop().
  ~HttpServer();

  // HOST:PORT actually listened on.
  const std::string& address() const;

  // Waits until no request is being answered (every exchange ended, its
  // last byte written or its client gone); false when `deadline` passed
  // first.
  bool WaitForIdle(absl::Time deadline);

  // Closes the listener and every connection, then joins the threads.
  // Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_HTTP_SERVER_H_
