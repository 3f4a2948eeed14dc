#include "server/metrics/metrics_exposer.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "prometheus/exposer.h"

namespace tvq::metrics {
namespace {

// Worker threads of the metrics listener, and how long one waits for a
// client to send its request (or read the answer) before dropping it.
constexpr int kMetricsThreads = 16;
constexpr int kMetricsReadTimeoutMs = 5000;

// civetweb only says "Possible problem binding to port"; binding the same
// address ourselves gives the system's reason.
std::string BindFailureReason(const HostPort& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const std::string port = absl::StrCat(address.port);
  const int lookup =
      getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(),
                  port.c_str(), &hints, &results);
  if (lookup != 0) {
    return absl::StrCat("cannot resolve \"", address.host,
                        "\": ", gai_strerror(lookup));
  }
  std::string reason = "unknown reason";
  for (const addrinfo* result = results; result != nullptr;
       result = result->ai_next) {
    const int fd =
        socket(result->ai_family, result->ai_socktype, result->ai_protocol);
    if (fd < 0) {
      reason = std::strerror(errno);
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    const bool bound = bind(fd, result->ai_addr, result->ai_addrlen) == 0;
    if (!bound) reason = std::strerror(errno);
    close(fd);
    if (bound) {
      reason =
          "the address can be bound now; it was busy or refused a moment ago";
      break;
    }
  }
  freeaddrinfo(results);
  return reason;
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(std::string_view address) {
  auto invalid = [&](std::string_view problem) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "metrics address \"%s\" %s; expected HOST:PORT, e.g. 127.0.0.1:9464",
        address, problem));
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return invalid("has no port");
  HostPort parsed;
  std::string_view host = address.substr(0, colon);
  if (host.find(':') != std::string_view::npos ||
      host.find('[') != std::string_view::npos) {
    // Debian's civetweb (under prometheus-cpp's Exposer) is built without
    // IPv6: mg_check_feature(8) == 0.
    return invalid(
        "is an IPv6 address: the metrics listener supports IPv4 only (use "
        "127.0.0.1 or 0.0.0.0)");
  }
  if (host.empty()) return invalid("has no host");
  parsed.host = std::string(host);
  const absl::string_view port(address.data() + colon + 1,
                               address.size() - colon - 1);
  if (!absl::SimpleAtoi(port, &parsed.port) || parsed.port < 0 ||
      parsed.port > 65535) {
    return invalid(
        absl::StrCat("has port \"", port, "\", not a number in [0, 65535]"));
  }
  return parsed;
}

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Start(
    std::string_view address,
    const std::vector<std::weak_ptr<prometheus::Collectable>>& collectables) {
  absl::StatusOr<HostPort> parsed = ParseHostPort(address);
  if (!parsed.ok()) return parsed.status();
  const std::string listening = absl::StrCat(parsed->host, ":", parsed->port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // civetweb gives each connection a worker thread until the request is
    // read: with 2 workers, two clients that send half a request blocked
    // every scrape for civetweb's 30 s read timeout. More workers and a
    // short read timeout keep /metrics answering while slow clients hang.
    exposer = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", listening,                               //
        "num_threads", absl::StrCat(kMetricsThreads),               //
        "request_timeout_ms", absl::StrCat(kMetricsReadTimeoutMs),  //
    });
  } catch (const std::exception& error) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot listen for metrics on %s: %s (civetweb: %s); pick another "
        "--metrics-address",
        address, BindFailureReason(*parsed), error.what()));
  }
  HostPort bound = *parsed;
  try {
    for (const std::weak_ptr<prometheus::Collectable>& collectable :
         collectables) {
      exposer->RegisterCollectable(collectable, "/metrics");
    }
    const std::vector<int> ports = exposer->GetListeningPorts();
    if (ports.empty()) {
      return absl::UnavailableError(absl::StrFormat(
          "metrics listener on %s reports no listening port", address));
    }
    bound.port = ports.front();
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrFormat(
        "setting up the metrics endpoint on %s: %s", address, error.what()));
  }
  return std::unique_ptr<MetricsExposer>(
      new MetricsExposer(std::move(exposer), std::move(bound)));
}

MetricsExposer::MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer,
                               HostPort bound)
    : exposer_(std::move(exposer)),
      host_(std::move(bound.host)),
      port_(bound.port) {}

MetricsExposer::~MetricsExposer() = default;

std::string MetricsExposer::url() const {
  return absl::StrCat("http://", host_, ":", port_, "/metrics");
}

}  // namespace tvq::metrics
