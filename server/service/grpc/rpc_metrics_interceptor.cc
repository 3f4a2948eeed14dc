#include "server/service/grpc/rpc_metrics_interceptor.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/interceptor.h"

namespace tvq::service {
namespace {

constexpr char kServicePrefix[] = "/tvq.v1.TextGeneration/";
constexpr char kInvalidUtf8[] =
    "contains invalid UTF-8 data when parsing a protocol buffer";

// The field the last parse on this thread found invalid UTF-8 in (set by
// the protobuf log handler, taken by the interceptor on the same thread:
// gRPC parses the request and runs POST_RECV_MESSAGE in one go).
thread_local std::string invalid_utf8_field;

// See DeadlinePassed.
constexpr std::chrono::milliseconds kDeadlineSlack(250);

std::string TakeInvalidUtf8Field() {
  return std::exchange(invalid_utf8_field, {});
}

// The request message of `method`, for messages.
std::string RequestType(const std::string& method) {
  if (method == "GenerateStream") return "tvq.v1.GenerateRequest";
  return absl::StrFormat("tvq.v1.%sRequest", method);
}

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(metrics::RpcMetrics* metrics, std::string method,
                        grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics), method_(std::move(method)), info_(info) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_MESSAGE)) {
      if (methods->GetRecvMessage() == nullptr) {
        unparsed_ = true;
        invalid_field_ = TakeInvalidUtf8Field();
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      const bool expired = DeadlinePassed();
      if (unparsed_ && status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        status = UnparsedStatus(expired);
        methods->ModifySendStatus(status);
      }
      grpc::StatusCode code = status.error_code();
      // A call ended by its deadline: its client was told
      // DEADLINE_EXCEEDED, whatever the server's side saw.
      if (expired && (code == grpc::StatusCode::CANCELLED ||
                      code == grpc::StatusCode::UNIMPLEMENTED)) {
        code = grpc::StatusCode::DEADLINE_EXCEEDED;
      }
      if (metrics_ != nullptr) {
        metrics_->OnRpcFinished(method_, static_cast<int>(code));
      }
    }
    methods->Proceed();
  }

 private:
  // Whether the call's deadline has passed, or is so close that the client
  // (whose clock runs ahead of the server's view by the time the request
  // took to arrive) has already given up with DEADLINE_EXCEEDED.
  bool DeadlinePassed() const {
    grpc::ServerContextBase* context = info_->server_context();
    if (context == nullptr) return false;
    const std::chrono::system_clock::time_point deadline = context->deadline();
    return deadline != std::chrono::system_clock::time_point::max() &&
           deadline <= std::chrono::system_clock::now() + kDeadlineSlack;
  }

  bool Cancelled() const {
    grpc::ServerContextBase* context = info_->server_context();
    return context != nullptr && context->IsCancelled();
  }

  grpc::Status UnparsedStatus(bool expired) const {
    if (!invalid_field_.empty()) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrFormat("%s must be valid UTF-8 (a proto3 string field); "
                          "send raw bytes as token ids",
                          invalid_field_));
    }
    // No message because the call ended before it arrived.
    if (expired) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "the deadline passed before the request was read");
    }
    if (Cancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          "the call was cancelled before the request was read");
    }
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("the request is not a valid %s message",
                                        RequestType(method_)));
  }

  metrics::RpcMetrics* const metrics_;
  const std::string method_;
  grpc::experimental::ServerRpcInfo* const info_;
  bool unparsed_ = false;
  std::string invalid_field_;
};

// protobuf's default format: "[libprotobuf ERROR file:line] message".
void PrintProtobufLog(google::protobuf::LogLevel level, const char* filename,
                      int line, const std::string& message) {
  static const char* const kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  const int index = static_cast<int>(level);
  std::fprintf(stderr, "[libprotobuf %s %s:%d] %s\n",
               index >= 0 && index < 4 ? kLevels[index] : "?", filename, line,
               message.c_str());
  std::fflush(stderr);
}

void FilteredProtobufLog(google::protobuf::LogLevel level, const char* filename,
                         int line, const std::string& message) {
  if (message.find(kInvalidUtf8) == std::string::npos) {
    PrintProtobufLog(level, filename, line, message);
    return;
  }
  // "String field 'tvq.v1.GenerateRequest.text' contains invalid UTF-8 ..."
  const size_t begin = message.find('\'');
  const size_t end =
      begin == std::string::npos ? begin : message.find('\'', begin + 1);
  if (end != std::string::npos) {
    invalid_utf8_field = message.substr(begin + 1, end - begin - 1);
  }
  static std::mutex mutex;
  static std::chrono::steady_clock::time_point last;
  static long suppressed = 0;
  const std::chrono::steady_clock::time_point now =
      std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(mutex);
  if (last != std::chrono::steady_clock::time_point() &&
      now - last < std::chrono::minutes(1)) {
    ++suppressed;
    return;
  }
  std::string line_text = message;
  if (suppressed > 0) {
    line_text += absl::StrFormat(
        " (%d more like it in the last minute, not logged)", suppressed);
  }
  last = now;
  suppressed = 0;
  PrintProtobufLog(level, filename, line, line_text);
}

}  // namespace

grpc::experimental::Interceptor*
RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  if (method == nullptr ||
      std::strncmp(method, kServicePrefix, sizeof(kServicePrefix) - 1) != 0) {
    return nullptr;
  }
  return new RpcMetricsInterceptor(metrics_,
                                   method + sizeof(kServicePrefix) - 1, info);
}

void InstallProtobufLogFilter() {
  static std::once_flag once;
  std::call_once(once,
                 [] { google::protobuf::SetLogHandler(&FilteredProtobufLog); });
}

}  // namespace tvq::service
