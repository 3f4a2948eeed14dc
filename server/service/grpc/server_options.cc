#include "server/service/grpc/server_options.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpc/grpc.h"
#include "grpcpp/security/server_credentials.h"

namespace tvq::service {
namespace {

int ToMilliseconds(absl::Duration duration) {
  if (duration == absl::InfiniteDuration()) return INT_MAX;
  const int64_t milliseconds = absl::ToInt64Milliseconds(duration);
  return static_cast<int>(std::clamp<int64_t>(milliseconds, 1, INT_MAX));
}

constexpr int kOutOfDescriptors = 0;
constexpr int kTooManyConnections = 1;

}  // namespace

void ApplyConnectionOptions(const ConnectionOptions& options,
                            grpc::ServerBuilder& builder) {
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             ToMilliseconds(options.handshake_timeout));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             ToMilliseconds(options.max_connection_idle));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             ToMilliseconds(options.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             ToMilliseconds(options.keepalive_timeout));
  // Ping quiet connections too (no call, no data): a peer that vanished
  // without closing is found and closed.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             options.max_concurrent_streams);
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::clamp<int64_t>(options.max_request_bytes, 1, INT_MAX)));
}

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view address) {
  auto invalid = [&](absl::string_view problem) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--listen=%s %s; expected HOST:PORT with a port in [0, 65535], e.g. "
        "127.0.0.1:50051, 0.0.0.0:50051 or [::]:50051",
        address, problem));
  };
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return invalid("has no port");
  ListenAddress parsed;
  absl::string_view host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != absl::string_view::npos) {
    return invalid("has an IPv6 host without brackets");
  }
  if (host.empty()) return invalid("has no host");
  parsed.host = std::string(host);
  const absl::string_view port = address.substr(colon + 1);
  if (port.empty() || port.find_first_not_of("0123456789") != port.npos ||
      port.size() > 5 || !absl::SimpleAtoi(port, &parsed.port) ||
      parsed.port > 65535) {
    return invalid(
        absl::StrCat("has port \"", port, "\", not a number in [0, 65535]"));
  }
  return parsed;
}

absl::StatusOr<std::unique_ptr<GrpcListener>> GrpcListener::Bind(
    absl::string_view address, int max_connections, LogFunction log) {
  absl::StatusOr<ListenAddress> parsed = ParseListenAddress(address);
  if (!parsed.ok()) return parsed.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const std::string port = absl::StrCat(parsed->port);
  if (const int lookup =
          ::getaddrinfo(parsed->host.c_str(), port.c_str(), &hints, &results);
      lookup != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--listen=%s: cannot resolve \"%s\": %s", address,
                        parsed->host, gai_strerror(lookup)));
  }
  std::string reason = "no address to bind";
  int listen_fd = -1;
  for (const addrinfo* result = results; result != nullptr;
       result = result->ai_next) {
    const int fd = ::socket(result->ai_family,
                            result->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                            result->ai_protocol);
    if (fd < 0) {
      reason = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, result->ai_addr, result->ai_addrlen) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
      reason = std::strerror(errno);
      ::close(fd);
      continue;
    }
    listen_fd = fd;
    break;
  }
  ::freeaddrinfo(results);
  if (listen_fd < 0) {
    return absl::UnavailableError(
        absl::StrFormat("cannot listen on --listen=%s: %s", address, reason));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  ::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6
                ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    const int error = errno;
    ::close(listen_fd);
    return absl::ErrnoToStatus(error, "cannot create the listener's pipe");
  }
  const std::string host(address.substr(0, address.rfind(':')));
  return std::unique_ptr<GrpcListener>(new GrpcListener(
      listen_fd, wake[0], wake[1], bound_port,
      absl::StrCat(host, ":", bound_port), max_connections, std::move(log)));
}

GrpcListener::GrpcListener(int listen_fd, int wake_read, int wake_write,
                           int port, std::string address, int max_connections,
                           LogFunction log)
    : listen_fd_(listen_fd),
      wake_read_(wake_read),
      wake_write_(wake_write),
      port_(port),
      address_(std::move(address)),
      max_connections_(max_connections),
      log_(std::move(log)) {
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

GrpcListener::~GrpcListener() {
  Stop();
  ::close(listen_fd_);
  ::close(wake_read_);
  ::close(wake_write_);
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

void GrpcListener::AttachTo(
    grpc::ServerBuilder& builder,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  acceptor_ = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
      std::move(credentials));
}

void GrpcListener::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void GrpcListener::Stop() {
  if (stopped_.exchange(true)) return;
  const char byte = 0;
  [[maybe_unused]] ssize_t written = ::write(wake_write_, &byte, 1);
  if (thread_.joinable()) thread_.join();
}

void GrpcListener::LogRateLimited(int reason, const std::string& message) {
  const absl::Time now = absl::Now();
  if (now - last_log_[reason] < absl::Seconds(10)) {
    ++suppressed_[reason];
    return;
  }
  std::string line = message;
  if (suppressed_[reason] > 0) {
    absl::StrAppend(&line, " (and ", suppressed_[reason],
                    " more like it in the last 10 s)");
  }
  last_log_[reason] = now;
  suppressed_[reason] = 0;
  if (log_) log_(line);
}

void GrpcListener::Loop() {
  pollfd entries[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
  while (!stopped_.load()) {
    entries[0].revents = entries[1].revents = 0;
    const int ready = ::poll(entries, 2, 1000);
    if (ready < 0 && errno != EINTR) {
      absl::SleepFor(absl::Milliseconds(10));
      continue;
    }
    if (entries[1].revents != 0) break;
    if (reserve_fd_ < 0) {
      reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    // Accept everything waiting.
    while (!stopped_.load()) {
      const int fd =
          ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        const int error = errno;
        if (error == EINTR || error == ECONNABORTED) continue;
        if (error == EMFILE || error == ENFILE) {
          // Out of descriptors: use the reserve to take the connection off
          // the queue and close it, so that the queue drains and this loop
          // does not spin; the reserve is taken again on the next round.
          if (reserve_fd_ >= 0) {
            ::close(reserve_fd_);
            reserve_fd_ = -1;
            const int shed = ::accept4(listen_fd_, nullptr, nullptr,
                                       SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (shed >= 0) ::close(shed);
            reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          } else {
            absl::SleepFor(absl::Milliseconds(10));
          }
          LogRateLimited(
              kOutOfDescriptors,
              absl::StrCat("out of file descriptors (", std::strerror(error),
                           "): closed a new connection; raise the nofile "
                           "limit or lower --max-connections"));
          if (reserve_fd_ < 0) break;
          continue;
        }
        break;  // EAGAIN: nothing more waiting (or an error poll will show).
      }
      if (max_connections_ > 0) {
        const int open = CountConnectionsToPort(port_);
        if (open > max_connections_) {
          ::close(fd);
          LogRateLimited(
              kTooManyConnections,
              absl::StrFormat("closed a new connection: %d connections open, "
                              "--max-connections=%d",
                              open, max_connections_));
          continue;
        }
      }
      // Non-blocking, as gRPC's own accept would leave it.
      grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters
          parameters;
      parameters.listener_fd = listen_fd_;
      parameters.fd = fd;
      acceptor_->HandleNewConnection(&parameters);
    }
  }
}

int CountConnectionsToPort(int port) {
  int count = 0;
  bool read_any = false;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::FILE* file = std::fopen(path, "re");
    if (file == nullptr) continue;
    read_any = true;
    char line[512];
    // Header, then "sl local_address rem_address st ...", addresses as
    // HEX_IP:HEX_PORT, state 01 = ESTABLISHED.
    if (std::fgets(line, sizeof(line), file) == nullptr) {
      std::fclose(file);
      continue;
    }
    while (std::fgets(line, sizeof(line), file) != nullptr) {
      char local[64], remote[64], state[8];
      if (std::sscanf(line, "%*s %63s %63s %7s", local, remote, state) != 3) {
        continue;
      }
      const char* colon = std::strrchr(local, ':');
      if (colon == nullptr) continue;
      if (std::strtol(colon + 1, nullptr, 16) == port &&
          std::strcmp(state, "01") == 0) {
        ++count;
      }
    }
    std::fclose(file);
  }
  return read_any ? count : -1;
}

}  // namespace tvq::service
