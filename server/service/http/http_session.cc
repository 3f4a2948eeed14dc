#include "server/service/http/http_session.h"

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "boost/asio/dispatch.hpp"
#include "boost/asio/post.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"
#include "server/base/str_cat.h"
#include "server/service/http/http_errors.h"

namespace tvq::service::http {

using ::tvq::runtime::StrCat;
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

constexpr char kServerHeader[] = "tvq-server";
// Bytes of a pipelined next request buffered while the current one waits.
constexpr size_t kMaxBufferedWhileBusy = 64 << 10;
// The status recorded for an exchange whose client went away first.
constexpr int kClientClosedRequest = 499;

std::chrono::steady_clock::duration ToChrono(absl::Duration duration) {
  return absl::ToChronoNanoseconds(duration);
}

// Plaintext or TLS: every read and write goes through `Stream`; timeouts,
// cancel and close through its lowest layer, the TCP stream.
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

template <typename Stream>
class Session;

// The HttpExchange of one request: forwards to its session, which ignores
// calls of exchanges that already ended.
template <typename Stream>
class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Session<Stream>> session, uint64_t sequence,
           HttpRequest request)
      : session_(std::move(session)),
        sequence_(sequence),
        request_(std::move(request)) {}

  const HttpRequest& request() const override { return request_; }
  void SetRoute(std::string route) override;
  void SetKeyOwner(std::string owner) override { key_owner_ = std::move(owner); }
  const std::string& key_owner() const override { return key_owner_; }
  void Post(std::function<void()> task) override;
  void Reply(int status, std::string body, std::string_view content_type,
             const HeaderList& headers) override;
  void StartEventStream(const HeaderList& headers) override;
  bool SendEvent(std::string_view data) override;
  void EndEventStream() override;
  void OnClientGone(std::function<void()> callback) override;
  bool client_gone() const override;

 private:
  const std::shared_ptr<Session<Stream>> session_;
  const uint64_t sequence_;
  const HttpRequest request_;
  std::string key_owner_;
};

template <typename Stream>
class Session final : public std::enable_shared_from_this<Session<Stream>> {
 public:
  // Plaintext.
  Session(asio::ip::tcp::socket socket, std::shared_ptr<ServerShared> shared)
      : stream_(std::move(socket)),
        shared_(std::move(shared)),
        write_timer_(stream_.get_executor()) {
    Opened();
  }
  // TLS with `context`.
  Session(asio::ip::tcp::socket socket, std::shared_ptr<ServerShared> shared,
          std::shared_ptr<asio::ssl::context> context)
      : tls_context_(std::move(context)),
        stream_(std::move(socket), *tls_context_),
        shared_(std::move(shared)),
        write_timer_(stream_.get_executor()) {
    Opened();
  }
  ~Session() {
    // Only when the server stops with the exchange unanswered.
    if (exchange_active_) {
      if (shared_->observer != nullptr) {
        if (streaming_) shared_->observer->OnStreamClosed();
        shared_->observer->OnHttpResponse(route_, kClientClosedRequest);
      }
      shared_->ExchangeEnded();
    }
    if (shared_->observer != nullptr) shared_->observer->OnConnectionClosed();
    shared_->open_connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() {
    asio::dispatch(stream_.get_executor(),
                   [self = this->shared_from_this()] { self->Handshake(); });
  }

  // ---- HttpExchange, on the strand
  bool Current(uint64_t sequence) const {
    return exchange_active_ && sequence == sequence_;
  }
  void SetRoute(uint64_t sequence, std::string route) {
    if (Current(sequence)) route_ = std::move(route);
  }
  void Post(std::function<void()> task) {
    asio::post(stream_.get_executor(), std::move(task));
  }
  void Reply(uint64_t sequence, int status, std::string body,
             std::string_view content_type, const HeaderList& headers);
  void StartEventStream(uint64_t sequence, const HeaderList& headers);
  bool SendEvent(uint64_t sequence, std::string_view data);
  void EndEventStream(uint64_t sequence);
  void OnClientGone(uint64_t sequence, std::function<void()> callback) {
    if (!Current(sequence)) return;
    if (gone_) {
      callback();
      return;
    }
    gone_callback_ = std::move(callback);
  }
  bool client_gone() const { return gone_; }

 private:
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;
  // Counts the connection (constructors).
  void Opened() {
    shared_->open_connections.fetch_add(1, std::memory_order_relaxed);
    if (shared_->observer != nullptr) shared_->observer->OnConnectionOpened();
  }
  // The TCP layer (timeouts, cancel, close).
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }
  // TLS: the handshake (within request_timeout), then ReadHeader; a client
  // that fails it (no certificate under mutual TLS, one from another CA,
  // plaintext) is closed. Plaintext: ReadHeader.
  void Handshake();
  void ReadHeader();
  void OnHeader(error_code error);
  void ReadBody();
  void OnBody(error_code error);
  void Dispatch();
  // Answers a request that could not be read, then closes.
  void RejectRequest(const ApiError& error);
  void RejectRequestFor(error_code error);

  // The read that notices a client going away while an exchange runs.
  void StartWatch();
  void OnWatch(error_code error, size_t bytes);

  void WriteResponse(
      std::shared_ptr<bhttp::response<bhttp::string_body>> response);
  void Flush();
  void OnStreamWritten(error_code error);
  void StartWriteTimer();

  // The exchange's last byte is written (or its client is gone).
  void EndExchange(int status);
  void AfterExchange();
  void Linger();
  // The client is gone: tell the exchange, close the socket.
  void ClientGone();
  void Close();

  // TLS: the context the stream was made with (a reload makes new ones).
  const std::shared_ptr<asio::ssl::context> tls_context_;
  Stream stream_;
  const std::shared_ptr<ServerShared> shared_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  asio::steady_timer write_timer_;

  // The current exchange.
  uint64_t sequence_ = 0;
  bool exchange_active_ = false;
  bool responding_ = false;
  bool streaming_ = false;
  bool keep_alive_ = false;
  int status_ = 0;
  std::string route_;
  std::function<void()> gone_callback_;

  // Stream output: `pending_` waits while `in_flight_` is written.
  std::string pending_;
  std::string in_flight_;
  bool writing_ = false;
  bool ending_ = false;

  bool watch_pending_ = false;
  // Read the next request once the watch read has been cancelled.
  bool read_after_watch_ = false;
  bool gone_ = false;
  bool closed_ = false;
  size_t lingered_bytes_ = 0;
};

// ---------------------------------------------------------------- reading

template <>
void Session<PlainStream>::Handshake() {
  ReadHeader();
}

template <>
void Session<TlsStream>::Handshake() {
  Tcp().expires_after(ToChrono(shared_->options.request_timeout));
  stream_.async_handshake(asio::ssl::stream_base::server,
                          [self = shared_from_this()](error_code error) {
                            if (error) {
                              self->Close();
                              return;
                            }
                            self->ReadHeader();
                          });
}

template <typename Stream>
void Session<Stream>::ReadHeader() {
  if (closed_) return;
  parser_.emplace();
  parser_->body_limit(shared_->options.max_body_bytes);
  parser_->header_limit(
      static_cast<std::uint32_t>(shared_->options.max_header_bytes));
  Tcp().expires_after(ToChrono(shared_->options.request_timeout));
  bhttp::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](error_code error, size_t) {
        self->OnHeader(error);
      });
}

template <typename Stream>
void Session<Stream>::OnHeader(error_code error) {
  if (error) {
    RejectRequestFor(error);
    return;
  }
  const auto& header = parser_->get();
  if (beast::iequals(header[bhttp::field::expect], "100-continue")) {
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(stream_, asio::buffer(kContinue),
                      [self = shared_from_this()](error_code error, size_t) {
                        if (error) {
                          self->Close();
                          return;
                        }
                        self->ReadBody();
                      });
    return;
  }
  ReadBody();
}

template <typename Stream>
void Session<Stream>::ReadBody() {
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self = shared_from_this()](error_code error, size_t) {
                      self->OnBody(error);
                    });
}

template <typename Stream>
void Session<Stream>::OnBody(error_code error) {
  if (error) {
    RejectRequestFor(error);
    return;
  }
  Tcp().expires_never();
  Dispatch();
}

template <typename Stream>
void Session<Stream>::RejectRequestFor(error_code error) {
  if (error == bhttp::error::body_limit) {
    RejectRequest(BodyTooLargeError(
        absl::StrFormat("the request body is larger than the limit of %d bytes",
                        shared_->options.max_body_bytes)));
    return;
  }
  if (error == bhttp::error::header_limit) {
    ApiError too_large = BodyTooLargeError(absl::StrFormat(
        "the request headers are larger than the limit of %d bytes",
        shared_->options.max_header_bytes));
    too_large.http_status = 431;
    RejectRequest(too_large);
    return;
  }
  // A closed connection, a timeout or a reset: nothing to answer.
  if (error == bhttp::error::end_of_stream || error == asio::error::eof ||
      error == beast::error::timeout ||
      error.category() == asio::error::get_system_category() ||
      error == bhttp::error::partial_message) {
    Close();
    return;
  }
  ApiError bad;
  bad.http_status = 400;
  bad.type = "invalid_request_error";
  bad.code = "bad_http_request";
  bad.message = StrCat("the request is not valid HTTP/1.1: ", error.message());
  RejectRequest(bad);
}

template <typename Stream>
void Session<Stream>::RejectRequest(const ApiError& error) {
  ++sequence_;
  exchange_active_ = true;
  route_ = "other";
  keep_alive_ = false;
  shared_->ExchangeStarted();
  Reply(sequence_, error.http_status, ErrorBody(error), "application/json", {});
}

template <typename Stream>
void Session<Stream>::Dispatch() {
  bhttp::request<bhttp::string_body> message = parser_->release();
  parser_.reset();
  HttpRequest request;
  request.method = std::string(message.method_string());
  const std::string_view target = message.target();
  request.path = std::string(target.substr(0, target.find('?')));
  for (const auto& field : message) {
    request.headers.emplace_back(
        absl::AsciiStrToLower(std::string(field.name_string())),
        std::string(field.value()));
  }
  request.body = std::move(message.body());
  keep_alive_ = message.keep_alive();

  ++sequence_;
  exchange_active_ = true;
  responding_ = false;
  streaming_ = false;
  route_ = "other";
  gone_callback_ = nullptr;
  shared_->ExchangeStarted();
  auto exchange = std::make_shared<Exchange<Stream>>(
      shared_from_this(), sequence_, std::move(request));
  shared_->handler->Handle(std::move(exchange));
  // Waiting for the scheduler (no answer yet, or a stream): notice the
  // client leaving. A whole answer being written needs no watch.
  if (exchange_active_ && !gone_ && !watch_pending_ &&
      (!responding_ || streaming_)) {
    StartWatch();
  }
}

template <typename Stream>
void Session<Stream>::StartWatch() {
  watch_pending_ = true;
  stream_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](error_code error, size_t bytes) {
        self->OnWatch(error, bytes);
      });
}

template <typename Stream>
void Session<Stream>::OnWatch(error_code error, size_t bytes) {
  watch_pending_ = false;
  if (!error) {
    // The client sent more (a pipelined request): keep it for later.
    buffer_.commit(bytes);
    if (read_after_watch_) {
      read_after_watch_ = false;
      ReadHeader();
    } else if (exchange_active_ && buffer_.size() < kMaxBufferedWhileBusy) {
      StartWatch();
    }
    return;
  }
  if (error == asio::error::operation_aborted && read_after_watch_) {
    read_after_watch_ = false;
    ReadHeader();
    return;
  }
  if (closed_) return;
  ClientGone();
}

// ---------------------------------------------------------------- writing

template <typename Stream>
void Session<Stream>::Reply(uint64_t sequence, int status, std::string body,
                    std::string_view content_type, const HeaderList& headers) {
  if (!Current(sequence) || responding_) return;
  responding_ = true;
  status_ = status;
  if (gone_) {
    EndExchange(kClientClosedRequest);
    return;
  }
  auto response = std::make_shared<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(status), 11);
  response->set(bhttp::field::server, kServerHeader);
  response->set(bhttp::field::content_type, content_type);
  for (const auto& [name, value] : headers) response->set(name, value);
  response->keep_alive(keep_alive_);
  response->body() = std::move(body);
  response->prepare_payload();
  WriteResponse(std::move(response));
}

template <typename Stream>
void Session<Stream>::WriteResponse(
    std::shared_ptr<bhttp::response<bhttp::string_body>> response) {
  writing_ = true;
  StartWriteTimer();
  bhttp::async_write(
      stream_, *response,
      [self = shared_from_this(), response](error_code error, size_t) {
        self->writing_ = false;
        self->write_timer_.cancel();
        if (error) {
          self->ClientGone();
          self->EndExchange(kClientClosedRequest);
          return;
        }
        self->EndExchange(self->status_);
      });
}

template <typename Stream>
void Session<Stream>::StartEventStream(uint64_t sequence,
                               const HeaderList& headers) {
  if (!Current(sequence) || responding_) return;
  responding_ = true;
  streaming_ = true;
  status_ = 200;
  if (shared_->observer != nullptr) shared_->observer->OnStreamOpened();
  if (gone_) return;
  pending_ = StrCat(
      "HTTP/1.1 200 OK\r\nServer: ", kServerHeader,
      "\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n");
  for (const auto& [name, value] : headers) {
    pending_ += StrCat(name, ": ", value, "\r\n");
  }
  pending_ += StrCat(keep_alive_ ? "" : "Connection: close\r\n", "\r\n");
  Flush();
}

template <typename Stream>
bool Session<Stream>::SendEvent(uint64_t sequence, std::string_view data) {
  if (!Current(sequence) || !streaming_ || ending_ || gone_) return false;
  const std::string event = StrCat("data: ", data, "\n\n");
  pending_ += absl::StrFormat("%x\r\n", event.size());
  pending_ += event;
  pending_ += "\r\n";
  if (pending_.size() > shared_->options.max_pending_stream_bytes) {
    // The client reads slower than the tokens come: give up on it.
    ClientGone();
    return false;
  }
  Flush();
  return true;
}

template <typename Stream>
void Session<Stream>::EndEventStream(uint64_t sequence) {
  if (!Current(sequence) || !streaming_ || ending_) return;
  if (gone_) {
    EndExchange(kClientClosedRequest);
    return;
  }
  ending_ = true;
  pending_ += "0\r\n\r\n";
  Flush();
}

template <typename Stream>
void Session<Stream>::Flush() {
  if (writing_ || pending_.empty() || gone_) return;
  writing_ = true;
  in_flight_.swap(pending_);
  pending_.clear();
  StartWriteTimer();
  asio::async_write(stream_, asio::buffer(in_flight_),
                    [self = shared_from_this()](error_code error, size_t) {
                      self->OnStreamWritten(error);
                    });
}

template <typename Stream>
void Session<Stream>::OnStreamWritten(error_code error) {
  writing_ = false;
  write_timer_.cancel();
  in_flight_.clear();
  if (error) {
    ClientGone();
    if (ending_) EndExchange(kClientClosedRequest);
    return;
  }
  if (!pending_.empty()) {
    Flush();
  } else if (ending_) {
    EndExchange(status_);
  }
}

template <typename Stream>
void Session<Stream>::StartWriteTimer() {
  write_timer_.expires_after(ToChrono(shared_->options.write_timeout));
  write_timer_.async_wait([self = shared_from_this()](error_code error) {
    if (error) return;  // cancelled: the write finished
    // The client has not taken the bytes in time.
    self->ClientGone();
  });
}

// ---------------------------------------------------------------- ending

template <typename Stream>
void Session<Stream>::EndExchange(int status) {
  if (!exchange_active_) return;
  exchange_active_ = false;
  if (streaming_ && shared_->observer != nullptr) {
    shared_->observer->OnStreamClosed();
  }
  if (shared_->observer != nullptr) {
    shared_->observer->OnHttpResponse(route_,
                                      gone_ ? kClientClosedRequest : status);
  }
  gone_callback_ = nullptr;
  streaming_ = false;
  ending_ = false;
  responding_ = false;
  shared_->ExchangeEnded();
  AfterExchange();
}

template <typename Stream>
void Session<Stream>::AfterExchange() {
  if (gone_ || closed_) return;
  if (!keep_alive_) {
    Linger();
    return;
  }
  if (watch_pending_) {
    // The watch read holds the socket: cancel it, then read the next
    // request (OnWatch).
    read_after_watch_ = true;
    error_code ignored;
    Tcp().socket().cancel(ignored);
    return;
  }
  ReadHeader();
}

template <typename Stream>
void Session<Stream>::Linger() {
  // Half-close, then read and drop what the client still sends (the rest of
  // an oversized body) until it closes too: closing a socket with unread
  // bytes would reset the connection before the client reads the answer.
  error_code ignored;
  Tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  if (watch_pending_) return;  // its end closes the socket
  buffer_.clear();
  Tcp().expires_after(std::chrono::seconds(2));
  stream_.async_read_some(
      buffer_.prepare(64 << 10),
      [self = shared_from_this()](error_code error, size_t bytes) {
        self->lingered_bytes_ += bytes;
        if (error || self->lingered_bytes_ > (size_t{64} << 20)) {
          self->Close();
          return;
        }
        self->Linger();
      });
}

template <typename Stream>
void Session<Stream>::ClientGone() {
  if (gone_) return;
  gone_ = true;
  pending_.clear();
  std::function<void()> callback = std::move(gone_callback_);
  gone_callback_ = nullptr;
  Close();
  if (exchange_active_ && callback) callback();
  // A stream waiting for its next token ends once its handler ends it; an
  // exchange that already ended its output ends now.
  if (exchange_active_ && ending_ && !writing_) {
    EndExchange(kClientClosedRequest);
  }
}

template <typename Stream>
void Session<Stream>::Close() {
  if (closed_) return;
  closed_ = true;
  write_timer_.cancel();
  error_code ignored;
  Tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  Tcp().socket().close(ignored);
}

// ---------------------------------------------------------------- Exchange

template <typename Stream>
void Exchange<Stream>::SetRoute(std::string route) {
  session_->SetRoute(sequence_, std::move(route));
}
template <typename Stream>
void Exchange<Stream>::Post(std::function<void()> task) {
  session_->Post(std::move(task));
}
template <typename Stream>
void Exchange<Stream>::Reply(int status, std::string body,
                     std::string_view content_type, const HeaderList& headers) {
  session_->Reply(sequence_, status, std::move(body), content_type, headers);
}
template <typename Stream>
void Exchange<Stream>::StartEventStream(const HeaderList& headers) {
  session_->StartEventStream(sequence_, headers);
}
template <typename Stream>
bool Exchange<Stream>::SendEvent(std::string_view data) {
  return session_->SendEvent(sequence_, data);
}
template <typename Stream>
void Exchange<Stream>::EndEventStream() { session_->EndEventStream(sequence_); }
template <typename Stream>
void Exchange<Stream>::OnClientGone(std::function<void()> callback) {
  session_->OnClientGone(sequence_, std::move(callback));
}
template <typename Stream>
bool Exchange<Stream>::client_gone() const { return session_->client_gone(); }

}  // namespace

void ServerShared::ExchangeStarted() {
  absl::MutexLock lock(&mutex_);
  ++active_exchanges_;
}

void ServerShared::ExchangeEnded() {
  absl::MutexLock lock(&mutex_);
  --active_exchanges_;
}

bool ServerShared::WaitForIdle(absl::Time deadline) {
  absl::MutexLock lock(&mutex_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    return active_exchanges_ == 0;
  };
  return mutex_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void StartHttpSession(asio::ip::tcp::socket socket,
                      std::shared_ptr<ServerShared> shared) {
  if (shared->tls != nullptr) {
    std::shared_ptr<asio::ssl::context> context =
        shared->tls->ForNewConnection();
    std::make_shared<Session<TlsStream>>(std::move(socket), std::move(shared),
                                         std::move(context))
        ->Start();
    return;
  }
  std::make_shared<Session<PlainStream>>(std::move(socket), std::move(shared))
      ->Start();
}

}  // namespace tvq::service::http
