// What the scheduler is asked to do and how it reports back. No gRPC here:
// the service translates protos into these types and implements the sinks.
#ifndef TVQ_SERVER_SCHEDULER_REQUEST_H_
#define TVQ_SERVER_SCHEDULER_REQUEST_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/engine/sampler.h"
#include "server/scheduler/frontend.h"

namespace tvq::scheduler {

// Handle of an accepted request (unique for the scheduler's lifetime).
using RequestHandle = uint64_t;

enum class FinishReason {
  kUnspecified,
  kLength,
  kStopSequence,
  kEos,
  kStopToken,
  // Ended by the server (drain timeout at shutdown).
  kCancelled,
};

// "length", "stop_sequence", "eos", "stop_token", "cancelled" (metric labels).
constexpr std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kUnspecified:
      return "unspecified";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStopSequence:
      return "stop_sequence";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStopToken:
      return "stop_token";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// One generated (or scored) token's logprob and the most likely alternatives,
// from the model's unmodified distribution.
struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0;
  std::vector<runtime::TokenAlternative> top_alternatives;
};

struct Usage {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  // Tokens of the sequence that were not recomputed because a saved state
  // (a session) already held them. The scheduler leaves it 0; the session
  // layer fills it in.
  int cached_tokens = 0;
  double queue_time_seconds = 0;
  double time_to_first_token_seconds = 0;
  double total_time_seconds = 0;
};

// Which state a request starts from. kEmpty / kContinue / kCopy work on slots
// (SlotManager); kImport brings a state saved outside the pool (a session's
// host-memory copy) into the request's slot.
struct StartFrom {
  enum class Mode {
    // An empty state (position 0): today's behaviour.
    kEmpty,
    // The state kept under `key`, in place (no copy): the request advances
    // it, and the key is gone when the request ends unless `keep` names it
    // again. A request that fails loses the state: use kCopy to keep it.
    kContinue,
    // A copy of the state kept under `key` (StatePool::Copy); the source
    // stays untouched whatever happens to the request (fork, and "a failed
    // request leaves the state as it was").
    kCopy,
    // The state in `saved` (StatePool::Export bytes; null = an empty state),
    // imported into a free (or evicted) slot at admission. The bytes are
    // shared and never modified.
    kImport,
  };
  Mode mode = Mode::kEmpty;
  // The kept state (kContinue, kCopy).
  std::string key;
  // kImport only.
  std::shared_ptr<const std::string> saved = nullptr;
};

// A request's final state, saved out of its slot (StatePool::Export).
struct SavedState {
  std::string bytes;
  // Tokens the state absorbed (StatePool::position).
  int64_t position = 0;
  // The last token the request produced and did not feed (-1 if none).
  int32_t pending_token = -1;
};

// Receives a request's final state. Called on the scheduler thread, once, on
// success only (or a generation cut short at a drain, KeepState), and always before the request's sink hears of that success
// (so that a client told "done" finds the state saved). Never blocks.
class StateReceiver {
 public:
  virtual ~StateReceiver() = default;
  // An error when the export failed (the request itself succeeded).
  virtual void OnStateSaved(absl::StatusOr<SavedState> state) = 0;
};

// What happens to a request's state when it ends successfully. Default (empty
// key): the slot is freed. Otherwise the state is kept under `key` (replacing
// whatever was kept under it), pinned or evictable. A request that fails,
// is cancelled or cut short never keeps its state.
struct KeepState {
  std::string key;
  bool pinned = false;
  // When set, the final state of a successful request is also exported to
  // it, before the sink is told (sessions); so is the state of a generation
  // cut short at a drain after one or more tokens (up to its last token,
  // which is pending), not of one cut before its first.
  std::shared_ptr<StateReceiver> save_to = nullptr;
};

struct GenerationRequest {
  // Echoed back; for logs and errors.
  std::string request_id;
  // Where it came from (the metrics' frontend label only).
  Frontend frontend = Frontend::kGrpc;
  // The prompt as fed to the model (eos prefix already applied); non-empty,
  // every id inside the vocabulary.
  std::vector<int32_t> prompt;
  // Sampling, with the seed resolved.
  runtime::SamplingParams sampling;
  int max_new_tokens = 1;
  std::vector<std::string> stop_sequences;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // Report each token's logprob, with `top_logprobs` alternatives.
  bool logprobs = false;
  int top_logprobs = 0;
  // The request fails with DEADLINE_EXCEEDED once this passes.
  absl::Time deadline = absl::InfiniteFuture();
  // The state the prompt is fed into, and what to do with it afterwards. A
  // kept generation state holds the prompt and every generated token but the
  // last (never fed); SlotManager reports that one as the pending token, and
  // a continuation feeds it first.
  StartFrom start_from;
  KeepState keep;
};

// Tokens produced since the previous report.
struct TokenUpdate {
  std::vector<int32_t> token_ids;
  // Final text (whole UTF-8 characters, nothing that could start a stop
  // sequence); may lag token_ids.
  std::string text;
  // One per token_ids entry when the request asked for logprobs.
  std::vector<TokenLogprob> logprobs;
};

struct Completion {
  FinishReason finish_reason = FinishReason::kUnspecified;
  std::string matched_stop_sequence;
  int32_t matched_stop_token_id = -1;
  Usage usage;
};

// Receives a generation's tokens. Called on the scheduler thread: every
// method must return quickly and never block on the network (enqueue only).
// Every accepted request ends with exactly one OnFinished or OnFailed.
class TokenSink {
 public:
  virtual ~TokenSink() = default;
  virtual void OnTokens(TokenUpdate update) = 0;
  // `update` holds the last tokens and text (possibly empty).
  virtual void OnFinished(TokenUpdate update, const Completion& completion) = 0;
  // CANCELLED (client), DEADLINE_EXCEEDED, INTERNAL (backend), UNAVAILABLE
  // (shutdown), ...
  virtual void OnFailed(const absl::Status& status) = 0;
};

struct ScoreRequest {
  std::string request_id;
  Frontend frontend = Frontend::kGrpc;
  // The sequence (eos prefix already applied); at least 2 tokens.
  std::vector<int32_t> tokens;
  int top_logprobs = 0;
  absl::Time deadline = absl::InfiniteFuture();
  // As in GenerationRequest. Scoring from a kept state scores tokens[1..]
  // given the state and the tokens before them.
  StartFrom start_from;
  KeepState keep;
  // When true the last token is not fed: the state ends holding every token
  // but the last, which is reported as the pending token (like a generation's
  // last sampled token), so that a later request can continue from it. The
  // logprobs are the same: the last token's row predicts nothing scored.
  bool hold_last_token = false;
};

// Append: prefill tokens into a state without sampling (sessions). The
// state absorbs every token of `tokens`; `pending_token` is what the kept
// state reports as not yet fed (the caller holds back the last token so that
// a later generation has something to feed).
struct AppendRequest {
  std::string request_id;
  Frontend frontend = Frontend::kGrpc;
  // Non-empty, every id inside the vocabulary.
  std::vector<int32_t> tokens;
  int32_t pending_token = -1;
  absl::Time deadline = absl::InfiniteFuture();
  StartFrom start_from;
  KeepState keep;
};

struct AppendResult {
  Usage usage;
};

// Receives the end of an append. Same threading rules as TokenSink; exactly
// one call.
class AppendSink {
 public:
  virtual ~AppendSink() = default;
  virtual void OnAppended(AppendResult result) = 0;
  virtual void OnFailed(const absl::Status& status) = 0;
};

struct ScoreResult {
  // The scored sequence (ScoreRequest::tokens).
  std::vector<int32_t> tokens;
  // token_logprobs[i] scores tokens[i + 1] given tokens[0..i].
  std::vector<TokenLogprob> token_logprobs;
  double total_logprob = 0;
  Usage usage;
};

// Receives a score. Same threading rules as TokenSink; exactly one call.
class ScoreSink {
 public:
  virtual ~ScoreSink() = default;
  virtual void OnScored(ScoreResult result) = 0;
  virtual void OnFailed(const absl::Status& status) = 0;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_REQUEST_H_
