// POST /v1/responses over sessions (docs/http.md): each stored response owns
// a session holding the conversation's state after it, so a follow-up with
// previous_response_id forks that session (no prefill, the saved bytes are
// shared) and prefills only its new input; every stored response stays
// continuable, also after another follow-up branched from it. A new
// conversation starts an empty session; its id is the conversation's root,
// sent as the x-session-id header of every turn. The front end only
// translates: the session manager and the scheduler do the work.
#ifndef TVQ_SERVER_SERVICE_HTTP_RESPONSES_CALL_H_
#define TVQ_SERVER_SERVICE_HTTP_RESPONSES_CALL_H_

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "server/core/engine.h"
#include "server/service/http/completion_request.h"
#include "server/service/http/http_exchange.h"
#include "server/service/routing/session_key.h"

namespace tvq::service::http {

struct StoredResponse {
  // The session holding the state after this response.
  std::string session_id;
  // The conversation's key, sent as x-session-id: the session key of its
  // first turn's request (x-session-id or an alias), else that turn's
  // session id.
  std::string root;
  // The response object (GET /v1/responses/{id}).
  nlohmann::ordered_json body;
  // The API key that made it (auth::KeyOwnerId; "" without keys): only that
  // key gets, deletes or continues it.
  std::string owner;
};

// The stored responses (store: true), at most `capacity`: past it the
// oldest is forgotten. Thread-safe.
class ResponseStore {
 public:
  static constexpr size_t kDefaultCapacity = 65536;
  explicit ResponseStore(size_t capacity = kDefaultCapacity)
      : capacity_(capacity) {}

  // Returns the responses forgotten to make room (the caller closes their
  // sessions).
  std::vector<StoredResponse> Put(const std::string& id,
                                  StoredResponse response);
  // nullopt also when it is another key's (`caller`, as
  // StoredResponse::owner), as if unknown.
  std::optional<StoredResponse> Get(const std::string& id,
                                    const std::string& caller);
  std::optional<StoredResponse> Remove(const std::string& id,
                                       const std::string& caller);

 private:
  const size_t capacity_;
  absl::Mutex mutex_;
  std::map<std::string, StoredResponse> responses_ ABSL_GUARDED_BY(mutex_);
  // Ids in the order they were stored (deleted ones are skipped).
  std::deque<std::string> order_ ABSL_GUARDED_BY(mutex_);
};

// The session key of an HTTP request's headers (routing::FindSessionKey).
absl::StatusOr<std::optional<routing::SessionKey>> SessionKeyOf(
    const HttpRequest& request);

// A stored response's conversation against the request's session key: OK
// when there is no key or it names the same conversation; otherwise
// INVALID_ARGUMENT naming both (routing::CombineSessionId).
absl::Status CheckSameConversation(
    const std::optional<routing::SessionKey>& key,
    const StoredResponse& stored);

// Runs one POST /v1/responses on the exchange's strand and answers it.
// `session_key`: the request's session key, if any: a new conversation
// takes it as its key; a follow-up's must be its conversation's.
void StartResponsesCall(std::shared_ptr<HttpExchange> exchange,
                        core::Engine* engine, ResponsesPlan plan,
                        std::string model_name,
                        std::shared_ptr<ResponseStore> store,
                        std::optional<routing::SessionKey> session_key);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_RESPONSES_CALL_H_
