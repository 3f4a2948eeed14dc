// A small gRPC client for the session RPCs of a real tvq-server (tests):
// create, append, generate (greedy or seeded, optionally streamed), score,
// fork, get, list, close, export and import. Every call has a 60 s deadline.
#ifndef TVQ_TESTS_INTEGRATION_SESSION_CLIENT_H_
#define TVQ_TESTS_INTEGRATION_SESSION_CLIENT_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "tests/integration/server_process.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::testing {

using Tokens = std::vector<int32_t>;

class SessionClient {
 public:
  explicit SessionClient(v1::TextGeneration::Stub& stub) : stub_(stub) {}

  grpc::Status Create(const std::string& id, const Tokens& prompt,
                      v1::Session* session, bool pinned = false,
                      int64_t ttl_seconds = 0);
  grpc::Status Append(const std::string& id, const Tokens& tokens,
                      v1::Session* session);
  // Greedy (or seeded) generation without an EOS prefix, ignoring EOS;
  // `session` empty = no session.
  grpc::Status Generate(const std::string& session, const Tokens& prompt,
                        int max_new_tokens, v1::GenerateResponse* response,
                        float temperature = 0, uint64_t seed = 1);
  // Generate that must succeed (a test failure otherwise): its tokens.
  Tokens MustGenerate(const std::string& session, const Tokens& prompt,
                      int max_new_tokens, float temperature = 0,
                      uint64_t seed = 1);
  grpc::Status Score(const std::string& session, const Tokens& tokens,
                     v1::ScoreResponse* response);
  grpc::Status Fork(const std::string& id, const std::string& new_id,
                    v1::Session* session);
  grpc::Status Get(const std::string& id, v1::Session* session);
  grpc::Status Close(const std::string& id);
  // The whole blob; `chunks` (optional) gets the number of messages.
  grpc::Status Export(const std::string& id, std::string* blob,
                      int* chunks = nullptr);
  // Sends `blob` in chunks of `chunk_bytes`.
  grpc::Status Import(const std::string& blob, const std::string& id,
                      v1::Session* session, size_t chunk_bytes = 4096);

 private:
  v1::TextGeneration::Stub& stub_;
};

// The ids ListSessions answers, in its order.
std::vector<std::string> ListIds(ServerProcess& server);

// The parts one after another.
Tokens Concat(std::initializer_list<Tokens> parts);

}  // namespace tvq::testing

#endif  // TVQ_TESTS_INTEGRATION_SESSION_CLIENT_H_
