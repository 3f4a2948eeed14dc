// tvq.v1.TextGeneration over the gRPC callback API. It only translates and
// validates: protos become scheduler requests, scheduler results become
// protos, absl::Status becomes grpc::Status (status_to_grpc.h).
//
// Life cycle (core/readiness.h, shared with the other front ends): the
// service is registered before the model is loaded; until the readiness is
// serving, every call fails with UNAVAILABLE ("the model is loading"). Once
// it is draining, Generate, GenerateStream and Score fail with UNAVAILABLE
// while calls already running go on; Tokenize, Detokenize and GetModelInfo
// keep answering until the server stops.
#ifndef TVQ_SERVER_SERVICE_GRPC_GENERATION_SERVICE_H_
#define TVQ_SERVER_SERVICE_GRPC_GENERATION_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/engine.h"
#include "server/core/readiness.h"
#include "server/service/grpc/request_validation.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::service {

// Counts the Generate, GenerateStream and Score calls whose reactor has not
// finished (OnDone), so that shutdown can wait for their last messages.
class ActiveCallCounter {
 public:
  // Held by a reactor for its lifetime.
  class Hold {
   public:
    explicit Hold(ActiveCallCounter* counter) : counter_(counter) {
      counter_->Add(1);
    }
    ~Hold() { counter_->Add(-1); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    ActiveCallCounter* const counter_;
  };

  // True when no call is active, false when `deadline` passed first.
  bool WaitUntilNone(absl::Time deadline);
  int count() const;

 private:
  void Add(int delta);
  mutable absl::Mutex mutex_;
  int count_ ABSL_GUARDED_BY(mutex_) = 0;
};

class GenerationService final : public v1::TextGeneration::CallbackService {
 public:
  // Serves the engine `readiness` gives (kept by pointer; must outlive the
  // service's last call).
  GenerationService(const core::Readiness* readiness,
                    std::string server_version);

  // Who owns sessions (docs/security.md, "API keys"). With `by_api_key` a
  // caller is the auth::KeyOwnerId of its key, and sessions are isolated by
  // it; without, every caller is the same one (""). `trusted_peer` gives the
  // owner id of this server's --drain-peer-api-key-file key as the file
  // holds it now ("" = none, null = no file): only a caller presenting it
  // may import a session on another key's behalf (SessionChunk.owner,
  // migration on drain). Set before serving.
  struct SessionOwnership {
    bool by_api_key = false;
    std::function<std::string()> trusted_peer;
  };
  void SetSessionOwnership(SessionOwnership ownership) {
    ownership_ = std::move(ownership);
  }

  // Waits until every Generate/GenerateStream/Score call has ended (its last
  // message written); false when `deadline` passed first.
  bool WaitForActiveCalls(absl::Time deadline) {
    return active_calls_.WaitUntilNone(deadline);
  }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context,
      const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(
      grpc::CallbackServerContext* context,
      const v1::DetokenizeRequest* request,
      v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(
      grpc::CallbackServerContext* context,
      const v1::GetModelInfoRequest* request,
      v1::GetModelInfoResponse* response) override;

  // Sessions (session_rpcs.cc): translation only; the logic is
  // sessions::SessionManager's (core::Engine::sessions()).
  grpc::ServerUnaryReactor* CreateSession(
      grpc::CallbackServerContext* context,
      const v1::CreateSessionRequest* request,
      v1::Session* response) override;
  grpc::ServerUnaryReactor* AppendToSession(
      grpc::CallbackServerContext* context,
      const v1::AppendToSessionRequest* request,
      v1::Session* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* context,
                                        const v1::ForkSessionRequest* request,
                                        v1::Session* response) override;
  grpc::ServerWriteReactor<v1::SessionChunk>* ExportSession(
      grpc::CallbackServerContext* context,
      const v1::ExportSessionRequest* request) override;
  grpc::ServerReadReactor<v1::SessionChunk>* ImportSession(
      grpc::CallbackServerContext* context, v1::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(
      grpc::CallbackServerContext* context,
      const v1::ListSessionsRequest* request,
      v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* CloseSession(
      grpc::CallbackServerContext* context,
      const v1::CloseSessionRequest* request,
      v1::CloseSessionResponse* response) override;

 private:
  const core::Readiness* const readiness_;
  // The caller's owner id (SessionOwnership): "" without keys.
  std::string Caller(const grpc::ServerContextBase& context) const;

  const std::string server_version_;
  SessionOwnership ownership_;
  ActiveCallCounter active_calls_;
};

}  // namespace tvq::service

#endif  // TVQ_SERVER_SERVICE_GRPC_GENERATION_SERVICE_H_
