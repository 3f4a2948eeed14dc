// One HTTP/1.1 connection of HttpServer (http_server.h): reads requests,
// hands each to the handler as an HttpExchange, writes whole responses or
// chunked Server-Sent Events, keeps the connection alive between requests
// and watches for the client going away. Internal to the HTTP front end.
#ifndef TVQ_SERVER_SERVICE_HTTP_HTTP_SESSION_H_
#define TVQ_SERVER_SERVICE_HTTP_HTTP_SESSION_H_

#include <atomic>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "boost/asio/ip/tcp.hpp"
#include "server/metrics/http_metrics.h"
#include "server/service/http/http_exchange.h"
#include "server/service/http/http_server.h"
#include "server/service/http/tls_context.h"

namespace tvq::service::http {

// What every connection of one server shares.
struct ServerShared {
  HttpServerOptions options;
  HttpHandler* handler = nullptr;
  metrics::HttpObserver* observer = nullptr;
  // Sessions alive (HttpServerOptions::max_connections).
  std::atomic<int> open_connections{0};
  // Set: every connection is TLS, with the context this gives at its start
  // (options.tls).
  std::unique_ptr<TlsContextSource> tls;

  // Exchanges that have not ended.
  void ExchangeStarted();
  void ExchangeEnded();
  bool WaitForIdle(absl::Time deadline);

 private:
  absl::Mutex mutex_;
  int active_exchanges_ ABSL_GUARDED_BY(mutex_) = 0;
};

// Starts serving an accepted connection (its socket bound to a strand);
// TLS when shared->tls is set.
void StartHttpSession(boost::asio::ip::tcp::socket socket,
                      std::shared_ptr<ServerShared> shared);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_HTTP_SESSION_H_
