#include "tests/integration/session_client.h"

#include <chrono>

#include "gtest/gtest.h"

namespace tvq::testing {
namespace {

std::chrono::system_clock::time_point In60s() {
  return std::chrono::system_clock::now() + std::chrono::seconds(60);
}

}  // namespace

grpc::Status SessionClient::Create(const std::string& id, const Tokens& prompt,
                                   v1::Session* session, bool pinned,
                                   int64_t ttl_seconds) {
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  if (!prompt.empty()) {
    request.mutable_token_ids()->mutable_ids()->Add(prompt.begin(),
                                                    prompt.end());
  }
  request.set_no_eos_prefix(true);
  request.set_pinned(pinned);
  request.set_ttl_seconds(ttl_seconds);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.CreateSession(&context, request, session);
}

grpc::Status SessionClient::Append(const std::string& id, const Tokens& tokens,
                                   v1::Session* session) {
  v1::AppendToSessionRequest request;
  request.set_session_id(id);
  request.mutable_token_ids()->mutable_ids()->Add(tokens.begin(),
                                                  tokens.end());
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.AppendToSession(&context, request, session);
}

grpc::Status SessionClient::Generate(const std::string& session,
                                     const Tokens& prompt, int max_new_tokens,
                                     v1::GenerateResponse* response,
                                     float temperature, uint64_t seed) {
  v1::GenerateRequest request;
  request.set_session_id(session);
  if (!prompt.empty()) {
    request.mutable_token_ids()->mutable_ids()->Add(prompt.begin(),
                                                    prompt.end());
  }
  request.set_no_eos_prefix(true);
  request.set_max_new_tokens(max_new_tokens);
  request.set_temperature(temperature);
  request.set_seed(seed);
  request.set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.Generate(&context, request, response);
}

Tokens SessionClient::MustGenerate(const std::string& session,
                                   const Tokens& prompt, int max_new_tokens,
                                   float temperature, uint64_t seed) {
  v1::GenerateResponse response;
  const grpc::Status status =
      Generate(session, prompt, max_new_tokens, &response, temperature, seed);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return Tokens(response.token_ids().begin(), response.token_ids().end());
}

grpc::Status SessionClient::Score(const std::string& session,
                                  const Tokens& tokens,
                                  v1::ScoreResponse* response) {
  v1::ScoreRequest request;
  request.set_session_id(session);
  request.mutable_token_ids()->mutable_ids()->Add(tokens.begin(),
                                                  tokens.end());
  request.set_no_eos_prefix(true);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.Score(&context, request, response);
}

grpc::Status SessionClient::Fork(const std::string& id,
                                 const std::string& new_id,
                                 v1::Session* session) {
  v1::ForkSessionRequest request;
  request.set_session_id(id);
  request.set_new_session_id(new_id);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.ForkSession(&context, request, session);
}

grpc::Status SessionClient::Get(const std::string& id, v1::Session* session) {
  v1::GetSessionRequest request;
  request.set_session_id(id);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.GetSession(&context, request, session);
}

grpc::Status SessionClient::Close(const std::string& id) {
  v1::CloseSessionRequest request;
  request.set_session_id(id);
  v1::CloseSessionResponse response;
  grpc::ClientContext context;
  context.set_deadline(In60s());
  return stub_.CloseSession(&context, request, &response);
}

grpc::Status SessionClient::Export(const std::string& id, std::string* blob,
                                   int* chunks) {
  v1::ExportSessionRequest request;
  request.set_session_id(id);
  grpc::ClientContext context;
  context.set_deadline(In60s());
  auto reader = stub_.ExportSession(&context, request);
  v1::SessionChunk chunk;
  blob->clear();
  int count = 0;
  while (reader->Read(&chunk)) {
    EXPECT_LE(chunk.data().size(), size_t{1} << 20);
    *blob += chunk.data();
    ++count;
  }
  if (chunks != nullptr) *chunks = count;
  return reader->Finish();
}

grpc::Status SessionClient::Import(const std::string& blob,
                                   const std::string& id, v1::Session* session,
                                   size_t chunk_bytes) {
  grpc::ClientContext context;
  context.set_deadline(In60s());
  auto writer = stub_.ImportSession(&context, session);
  size_t offset = 0;
  bool first = true;
  while (first || offset < blob.size()) {
    v1::SessionChunk chunk;
    if (first) chunk.set_session_id(id);
    chunk.set_data(blob.substr(offset, chunk_bytes));
    offset += chunk_bytes;
    first = false;
    if (!writer->Write(chunk)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

std::vector<std::string> ListIds(ServerProcess& server) {
  v1::ListSessionsResponse listed;
  grpc::ClientContext context;
  context.set_deadline(In60s());
  EXPECT_TRUE(server.stub()
                  .ListSessions(&context, v1::ListSessionsRequest(), &listed)
                  .ok());
  std::vector<std::string> ids;
  for (const v1::Session& session : listed.sessions()) {
    ids.push_back(session.session_id());
  }
  return ids;
}

Tokens Concat(std::initializer_list<Tokens> parts) {
  Tokens all;
  for (const Tokens& part : parts)
    all.insert(all.end(), part.begin(), part.end());
  return all;
}

}  // namespace tvq::testing
