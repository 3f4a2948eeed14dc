// How tvq-server's gRPC listener takes connections, kept out of main.cc:
// the channel arguments that bound each connection (handshake, idle,
// keepalive, message size), and the listener itself.
//
// The listener is our own accept loop handing each connection to gRPC
// (ServerBuilder's external connection acceptor) instead of gRPC's: gRPC
// 1.51 stops accepting for good once accept4() fails with EMFILE, and it
// has no cap on connections. This loop caps them (--max-connections), and
// when the process runs out of descriptors it sheds the connection it cannot
// take (a descriptor kept in reserve makes room to accept and close it) and
// keeps accepting.
#ifndef TVQ_SERVER_SERVICE_GRPC_SERVER_OPTIONS_H_
#define TVQ_SERVER_SERVICE_GRPC_SERVER_OPTIONS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/server_builder.h"

namespace tvq::service {

struct ConnectionOptions {
  // Connections open at once (accepted or waiting in the kernel's queue);
  // more are closed as they arrive. 0 = no cap.
  int max_connections = 1024;
  // A connection must complete the HTTP/2 handshake (preface and SETTINGS)
  // within this, else it is closed.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // A connection with no call for this long gets GOAWAY and is closed
  // (clients reconnect when they need to). InfiniteDuration = never.
  absl::Duration max_connection_idle = absl::Minutes(5);
  // The server pings a connection quiet for this long; one that does not
  // answer within keepalive_timeout is closed.
  absl::Duration keepalive_time = absl::Minutes(2);
  absl::Duration keepalive_timeout = absl::Seconds(20);
  // Calls one connection may have open at once.
  int max_concurrent_streams = 1024;
  // Largest request message (gRPC max receive message size).
  int64_t max_request_bytes = int64_t{64} << 20;
};

// Sets the channel arguments for `options` on `builder`.
void ApplyConnectionOptions(const ConnectionOptions& options,
                            grpc::ServerBuilder& builder);

// "HOST:PORT" or "[V6]:PORT" with a port in [0, 65535]; errors name the
// address and the problem.
struct ListenAddress {
  std::string host;
  int port = 0;
};
absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view address);

class GrpcListener {
 public:
  using LogFunction = std::function<void(const std::string&)>;

  // Binds and listens on `address`. Errors name the address and the
  // system's reason.
  static absl::StatusOr<std::unique_ptr<GrpcListener>> Bind(
      absl::string_view address, int max_connections, LogFunction log);

  GrpcListener(const GrpcListener&) = delete;
  GrpcListener& operator=(const GrpcListener&) = delete;
  // Stops accepting and closes the listening socket.
  ~GrpcListener();

  // Registers the listener with `builder`, its connections served with
  // `credentials` (plaintext or TLS, grpc_credentials.h); call before
  // BuildAndStart.
  void AttachTo(grpc::ServerBuilder& builder,
                std::shared_ptr<grpc::ServerCredentials> credentials);
  // Starts accepting; call after BuildAndStart.
  void Start();
  // Stops accepting (idempotent).
  void Stop();

  // "HOST:PORT" with the port actually bound.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

 private:
  GrpcListener(int listen_fd, int wake_read, int wake_write, int port,
               std::string address, int max_connections, LogFunction log);
  void Loop();
  // Logs at most one line per reason every 10 s, with what was suppressed.
  void LogRateLimited(int reason, const std::string& message);

  const int listen_fd_;
  const int wake_read_;
  const int wake_write_;
  const int port_;
  const std::string address_;
  const int max_connections_;
  const LogFunction log_;
  // Kept open so that one descriptor is free to accept-and-close when the
  // process has run out (-1 while used).
  int reserve_fd_ = -1;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
  absl::Time last_log_[2] = {absl::InfinitePast(), absl::InfinitePast()};
  int64_t suppressed_[2] = {0, 0};
};

// TCP connections the kernel holds to local port `port` (ESTABLISHED, from
// /proc/net/tcp and tcp6); -1 when those cannot be read.
int CountConnectionsToPort(int port);

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_SERVER_OPTIONS_H_
