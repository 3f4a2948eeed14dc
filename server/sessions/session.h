// The plain values of a session: what a session holds between requests
// (SessionSnapshot) and what the server reports about it (SessionInfo).
//
// A session is a token sequence kept as a constant-size state. Its state has
// absorbed every token but the last one, which stays pending (like a
// generation's last sampled token) and is fed first by the next request:
//   tokens held (token_count) = state position + (pending_token >= 0)
// An empty session holds no state (null) and no token.
#ifndef TVQ_SERVER_SESSIONS_SESSION_H_
#define TVQ_SERVER_SESSIONS_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace tvq::sessions {

// Where a session's state lives right now.
enum class SessionTier {
  // Host memory, between requests.
  kHost,
  // A state slot: a request is running on the session.
  kSlot,
  // A file in --session-dir: evicted from host memory (or saved at
  // shutdown); brought back on its next use.
  kDisk,
};

// "host", "slot", "disk" (metric labels, Session.tier).
constexpr std::string_view SessionTierName(SessionTier tier) {
  switch (tier) {
    case SessionTier::kHost:
      return "host";
    case SessionTier::kSlot:
      return "slot";
    case SessionTier::kDisk:
      return "disk";
  }
  return "unknown";
}

struct SessionSnapshot {
  // StatePool::Export bytes; null when the state is empty (position 0).
  // Immutable once made: forks share it.
  std::shared_ptr<const std::string> state;
  // Tokens the state absorbed.
  int64_t position = 0;
  // Tokens the session holds (position + 1 when a token is pending).
  int64_t token_count = 0;
  // The token held back for the next request, -1 if none.
  int32_t pending_token = -1;
  // ExtendTokenHash over every token the session holds.
  uint64_t token_hash = 0;
  // The tokens themselves: kept for prefix-reuse entries only (to verify a
  // hash match); null for sessions.
  std::shared_ptr<const std::vector<int32_t>> tokens;

  int64_t state_bytes() const {
    return state == nullptr ? 0 : static_cast<int64_t>(state->size());
  }
};

struct SessionInfo {
  std::string session_id;
  // Tokens the session holds (SessionSnapshot::token_count).
  int64_t position = 0;
  // Bytes of its saved state (0 for an empty session).
  int64_t state_bytes = 0;
  SessionTier tier = SessionTier::kHost;
  bool pinned = false;
  // When it expires if left idle; InfiniteFuture for pinned sessions and
  // while a request runs on it.
  absl::Time expires_at = absl::InfiniteFuture();
  absl::Time last_used = absl::InfinitePast();
  // Create with reuse_prefix: the prompt tokens taken from a retained
  // prefix-reuse state instead of computed (SessionManager::CreateParams);
  // 0 otherwise.
  int64_t cached_tokens = 0;
};

}  // namespace tvq::sessions

#endif  // TVQ_SERVER_SESSIONS_SESSION_H_
