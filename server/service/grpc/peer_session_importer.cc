#include "server/service/grpc/peer_session_importer.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "grpcpp/grpcpp.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::service {
namespace {

// At most what ImportSession accepts per chunk.
constexpr size_t kChunkBytes = size_t{1} << 20;

class PeerSessionImporter final : public sessions::SessionPeer {
 public:
  PeerSessionImporter(std::string address, absl::Duration timeout,
                      PeerCredentialsLoader load)
      : address_(std::move(address)),
        timeout_(timeout),
        load_(std::move(load)) {}

  absl::Status Import(const std::string& session_id, const std::string& blob,
                      absl::Duration ttl, bool pinned,
                      const std::string& owner) override {
    if (absl::Status connected = Connect(); !connected.ok()) return connected;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
    if (!api_key_.empty()) {
      context.AddMetadata("authorization", "Bearer " + api_key_);
    }
    v1::Session response;
    std::unique_ptr<grpc::ClientWriter<v1::SessionChunk>> writer =
        stub_->ImportSession(&context, &response);
    size_t offset = 0;
    bool first = true;
    while (first || offset < blob.size()) {
      v1::SessionChunk chunk;
      const size_t size = std::min(kChunkBytes, blob.size() - offset);
      chunk.set_data(blob.substr(offset, size));
      if (first) {
        chunk.set_session_id(session_id);
        chunk.set_ttl_seconds(
            std::max<int64_t>(0, absl::ToInt64Seconds(absl::Ceil(
                                     ttl, absl::Seconds(1)))));
        chunk.set_pinned(pinned);
        chunk.set_owner(owner);
        first = false;
      }
      offset += size;
      if (!writer->Write(chunk)) break;  // the call ended: Finish says why
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    if (status.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }

  std::string Describe() const override {
    return tls_ ? address_ + " (TLS)" : address_;
  }

 private:
  // The first push reads the credentials and makes the channel (Import is
  // called from one thread only).
  absl::Status Connect() {
    if (stub_ != nullptr) return absl::OkStatus();
    PeerCredentials credentials;
    if (load_ != nullptr) {
      absl::StatusOr<PeerCredentials> loaded = load_();
      if (!loaded.ok()) {
        return absl::UnavailableError(absl::StrFormat(
            "reading the --drain-peer credentials failed: %s",
            loaded.status().message()));
      }
      credentials = *std::move(loaded);
    }
    api_key_ = std::move(credentials.api_key);
    tls_ = credentials.tls.has_value();
    stub_ = v1::TextGeneration::NewStub(
        grpc::CreateChannel(address_, ChannelCredentials(credentials)));
    return absl::OkStatus();
  }

  static std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
      const PeerCredentials& credentials) {
    if (!credentials.tls.has_value()) {
      return grpc::InsecureChannelCredentials();
    }
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = credentials.tls->server_ca;
    options.pem_cert_chain = credentials.tls->cert_chain;
    options.pem_private_key = credentials.tls->private_key;
    return grpc::SslCredentials(options);
  }

  const std::string address_;
  const absl::Duration timeout_;
  const PeerCredentialsLoader load_;
  std::string api_key_;
  bool tls_ = false;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<sessions::SessionPeer>> MakePeerSessionImporter(
    const std::string& address, absl::Duration timeout,
    PeerCredentialsLoader load) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--drain-peer must be HOST:PORT with a port in [1, 65535], got \"%s\"",
        address));
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--drain-peer-timeout must be > 0, got %s",
                        absl::FormatDuration(timeout)));
  }
  return std::unique_ptr<sessions::SessionPeer>(
      new PeerSessionImporter(address, timeout, std::move(load)));
}

}  // namespace tvq::service
