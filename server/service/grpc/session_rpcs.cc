// The session RPCs of GenerationService: proto <-> sessions::SessionManager.
// No session logic here (it is the core's, shared with other front ends).
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "server/service/grpc/generation_service.h"
#include "server/service/grpc/session_metadata.h"
#include "server/service/grpc/status_to_grpc.h"
#include "server/service/grpc/unary_call.h"

namespace tvq::service {
namespace {

// ExportSession writes chunks of at most this many bytes.
constexpr size_t kChunkBytes = size_t{1} << 20;

int64_t UnixMillis(absl::Time time) {
  if (time == absl::InfiniteFuture() || time == absl::InfinitePast()) return 0;
  return absl::ToUnixMillis(time);
}

v1::SessionTier ToProto(sessions::SessionTier tier) {
  switch (tier) {
    case sessions::SessionTier::kHost:
      return v1::SESSION_TIER_HOST;
    case sessions::SessionTier::kSlot:
      return v1::SESSION_TIER_SLOT;
    case sessions::SessionTier::kDisk:
      return v1::SESSION_TIER_DISK;
  }
  return v1::SESSION_TIER_UNSPECIFIED;
}

void ToProto(const sessions::SessionInfo& in, v1::Session* out) {
  out->set_session_id(in.session_id);
  out->set_position(in.position);
  out->set_state_bytes(in.state_bytes);
  out->set_tier(ToProto(in.tier));
  out->set_pinned(in.pinned);
  out->set_expires_at(UnixMillis(in.expires_at));
  out->set_last_used(UnixMillis(in.last_used));
}

// Finishes a unary session call when the manager calls back (from the
// scheduler thread, or at once). The response names its session in
// x-session-id: the one returned, or `requested` when the call failed.
sessions::SessionManager::InfoCallback FinishWith(
    grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
    v1::Session* response, std::string requested,
    std::shared_ptr<ActiveCallCounter::Hold> hold) {
  return [context, reactor, response, requested = std::move(requested),
          hold = std::move(hold)](absl::StatusOr<sessions::SessionInfo> info) {
    if (!info.ok()) {
      AnnounceSession(context, requested);
      reactor->Finish(ToGrpcStatus(info.status()));
      return;
    }
    AnnounceSession(context, info->session_id);
    ToProto(*info, response);
    reactor->Finish(grpc::Status::OK);
  };
}

// ExportSession: the whole blob is made at once (a state is a few MB at
// most for today's models), then written chunk by chunk.
class ExportCall final : public grpc::ServerWriteReactor<v1::SessionChunk> {
 public:
  explicit ExportCall(absl::StatusOr<std::string> blob) {
    if (!blob.ok()) {
      Finish(ToGrpcStatus(blob.status()));
      return;
    }
    blob_ = *std::move(blob);
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (last_started_) return;  // StartWriteAndFinish finishes the call
    if (!ok) {
      last_started_ = true;
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "the client stopped reading the export"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  // Writes the next chunk; the last one finishes the call.
  void Next() {
    const size_t size = std::min(kChunkBytes, blob_.size() - offset_);
    chunk_.set_data(blob_.substr(offset_, size));
    offset_ += size;
    if (offset_ >= blob_.size()) {
      last_started_ = true;
      StartWriteAndFinish(&chunk_, grpc::WriteOptions(), grpc::Status::OK);
      return;
    }
    StartWrite(&chunk_);
  }

  std::string blob_;
  size_t offset_ = 0;
  bool last_started_ = false;
  v1::SessionChunk chunk_;
};

// ImportSession: reads every chunk (at most `max_bytes` in all), then hands
// the blob to the manager.
class ImportCall final : public grpc::ServerReadReactor<v1::SessionChunk> {
 public:
  // `caller`: the caller's owner id; `trusted_peer`: who may name another
  // owner (GenerationService::SessionOwnership), asked only then.
  ImportCall(grpc::CallbackServerContext* context,
             sessions::SessionManager* manager, v1::Session* response,
             size_t max_bytes, std::string caller,
             std::function<std::string()> trusted_peer)
      : context_(context),
        manager_(manager),
        response_(response),
        max_bytes_(max_bytes),
        caller_(std::move(caller)),
        trusted_peer_(std::move(trusted_peer)),
        owner_(caller_) {
    StartRead(&chunk_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side: the blob is complete.
      if (first_) {
        // No chunk at all: the session key can still name the session.
        absl::StatusOr<std::string> session_id =
            SessionIdOf(*context_, "", "session_id");
        if (!session_id.ok()) {
          Finish(ToGrpcStatus(session_id.status()));
          return;
        }
        session_id_ = *std::move(session_id);
      }
      absl::StatusOr<sessions::SessionInfo> info =
          manager_->Import(blob_, session_id_, absl::Seconds(ttl_seconds_),
                           pinned_, owner_);
      if (!info.ok()) {
        AnnounceSession(context_, session_id_);
        Finish(ToGrpcStatus(info.status()));
        return;
      }
      AnnounceSession(context_, info->session_id);
      ToProto(*info, response_);
      Finish(grpc::Status::OK);
      return;
    }
    if (first_) {
      first_ = false;
      // The first chunk's session_id, combined with the call's session key.
      absl::StatusOr<std::string> session_id =
          SessionIdOf(*context_, chunk_.session_id(), "session_id");
      if (!session_id.ok()) {
        Finish(ToGrpcStatus(session_id.status()));
        return;
      }
      session_id_ = *std::move(session_id);
      ttl_seconds_ = chunk_.ttl_seconds();
      pinned_ = chunk_.pinned();
      if (!chunk_.owner().empty()) {
        const std::string trusted =
            trusted_peer_ != nullptr ? trusted_peer_() : std::string();
        if (trusted.empty() || caller_ != trusted) {
          Finish(ToGrpcStatus(absl::PermissionDeniedError(
              "owner: only a replica presenting this server's "
              "--drain-peer-api-key-file key may import a session for "
              "another API key")));
          return;
        }
        owner_ = chunk_.owner();
      }
      if (ttl_seconds_ < 0) {
        Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrFormat(
            "ttl_seconds must be >= 0 (0 = the default), got %d",
            ttl_seconds_))));
        return;
      }
    } else if (!chunk_.session_id().empty() || chunk_.ttl_seconds() != 0 ||
               chunk_.pinned() || !chunk_.owner().empty()) {
      Finish(ToGrpcStatus(absl::InvalidArgumentError(
          "session_id, ttl_seconds, pinned and owner may only be set on the "
          "first chunk")));
      return;
    }
    if (chunk_.data().size() > kChunkBytes) {
      Finish(ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrFormat("data: a chunk has %d bytes, at most %d allowed",
                          chunk_.data().size(), kChunkBytes))));
      return;
    }
    if (blob_.size() + chunk_.data().size() > max_bytes_) {
      Finish(ToGrpcStatus(absl::InvalidArgumentError(absl::StrFormat(
          "data: the blob exceeds %d bytes, the largest session blob of this "
          "model",
          max_bytes_))));
      return;
    }
    blob_ += chunk_.data();
    StartRead(&chunk_);
  }
  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const context_;
  sessions::SessionManager* const manager_;
  v1::Session* const response_;
  const size_t max_bytes_;
  const std::string caller_;
  const std::function<std::string()> trusted_peer_;
  // Who the imported session belongs to: the caller, or the owner a trusted
  // peer names.
  std::string owner_;
  v1::SessionChunk chunk_;
  std::string blob_;
  std::string session_id_;
  int64_t ttl_seconds_ = 0;
  bool pinned_ = false;
  bool first_ = true;
};

class FailedRead final : public grpc::ServerReadReactor<v1::SessionChunk> {
 public:
  explicit FailedRead(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

class FailedWrite final : public grpc::ServerWriteReactor<v1::SessionChunk> {
 public:
  explicit FailedWrite(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* GenerationService::CreateSession(
    grpc::CallbackServerContext* context,
    const v1::CreateSessionRequest* request, v1::Session* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForNewWork();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  v1::CreateSessionRequest keyed;
  absl::StatusOr<sessions::SessionManager::CreateParams> params =
      ToCreateSessionParams(WithSessionId(*request, *session_id, keyed),
                            Validation(**model));
  if (!params.ok()) return FinishNow(context, params.status());
  params->deadline = Deadline(context);
  params->owner = Caller(*context);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (*model)->sessions().Create(
      *std::move(params),
      FinishWith(context, reactor, response, *session_id,
                 std::make_shared<ActiveCallCounter::Hold>(&active_calls_)));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::AppendToSession(
    grpc::CallbackServerContext* context,
    const v1::AppendToSessionRequest* request, v1::Session* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForNewWork();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  v1::AppendToSessionRequest keyed;
  absl::StatusOr<sessions::SessionManager::AppendParams> params =
      ToAppendParams(WithSessionId(*request, *session_id, keyed),
                     Validation(**model));
  if (!params.ok()) return FinishNow(context, params.status());
  params->deadline = Deadline(context);
  params->caller = Caller(*context);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  (*model)->sessions().Append(
      *std::move(params),
      FinishWith(context, reactor, response, *session_id,
                 std::make_shared<ActiveCallCounter::Hold>(&active_calls_)));
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::ForkSession(
    grpc::CallbackServerContext* context, const v1::ForkSessionRequest* request,
    v1::Session* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  // The session key names the source session.
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  v1::ForkSessionRequest keyed;
  const v1::ForkSessionRequest& effective =
      WithSessionId(*request, *session_id, keyed);
  if (absl::Status status = ValidateForkSessionRequest(effective);
      !status.ok()) {
    return FinishNow(context, status);
  }
  absl::StatusOr<sessions::SessionInfo> info = (*model)->sessions().Fork(
      effective.session_id(), effective.new_session_id(), Caller(*context));
  if (!info.ok()) {
    AnnounceSession(context, *session_id);
    return FinishNow(context, info.status());
  }
  // The new session lives here too: the response names it.
  AnnounceSession(context, info->session_id);
  ToProto(*info, response);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerWriteReactor<v1::SessionChunk>* GenerationService::ExportSession(
    grpc::CallbackServerContext* context,
    const v1::ExportSessionRequest* request) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return new FailedWrite(ToGrpcStatus(model.status()));
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return new FailedWrite(ToGrpcStatus(session_id.status()));
  if (absl::Status status = ValidateSessionId(*session_id, "session_id");
      !status.ok()) {
    return new FailedWrite(ToGrpcStatus(status));
  }
  AnnounceSession(context, *session_id);
  return new ExportCall(
      (*model)->sessions().Export(*session_id, Caller(*context)));
}

grpc::ServerReadReactor<v1::SessionChunk>* GenerationService::ImportSession(
    grpc::CallbackServerContext* context, v1::Session* response) {
  // New work: a draining server refuses imports (it would hold sessions it
  // is about to lose), so a peer migrating to it falls back to its disk.
  absl::StatusOr<core::Engine*> model = readiness_->ForNewWork();
  if (!model.ok()) return new FailedRead(ToGrpcStatus(model.status()));
  const size_t max_bytes = sessions::kBlobHeaderBytes +
                           sessions::kBlobChecksumBytes +
                           static_cast<size_t>((*model)->state_export_bytes());
  return new ImportCall(context, &(*model)->sessions(), response, max_bytes,
                        Caller(*context), ownership_.trusted_peer);
}

grpc::ServerUnaryReactor* GenerationService::GetSession(
    grpc::CallbackServerContext* context, const v1::GetSessionRequest* request,
    v1::Session* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  if (absl::Status status = ValidateSessionId(*session_id, "session_id");
      !status.ok()) {
    return FinishNow(context, status);
  }
  AnnounceSession(context, *session_id);
  absl::StatusOr<sessions::SessionInfo> info =
      (*model)->sessions().Get(*session_id, Caller(*context));
  if (!info.ok()) return FinishNow(context, info.status());
  ToProto(*info, response);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::ListSessions(
    grpc::CallbackServerContext* context,
    const v1::ListSessionsRequest* /*request*/,
    v1::ListSessionsResponse* response) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  for (const sessions::SessionInfo& info :
       (*model)->sessions().List(Caller(*context))) {
    ToProto(info, response->add_sessions());
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::CloseSession(
    grpc::CallbackServerContext* context,
    const v1::CloseSessionRequest* request,
    v1::CloseSessionResponse* /*response*/) {
  absl::StatusOr<core::Engine*> model = readiness_->ForQueries();
  if (!model.ok()) return FinishNow(context, model.status());
  absl::StatusOr<std::string> session_id =
      SessionIdOf(*context, request->session_id(), "session_id");
  if (!session_id.ok()) return FinishNow(context, session_id.status());
  if (absl::Status status = ValidateSessionId(*session_id, "session_id");
      !status.ok()) {
    return FinishNow(context, status);
  }
  AnnounceSession(context, *session_id);
  return FinishNow(context,
                   (*model)->sessions().Close(*session_id, Caller(*context)));
}

}  // namespace tvq::service
