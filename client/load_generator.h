// The `bench` load generator: many concurrent GenerateStream calls from one
// process, driven through the gRPC callback API (one ClientReadReactor per
// stream, no thread per stream), closed-loop (keep N streams open) or
// open-loop (Poisson arrivals at a given rate), with optional mid-stream
// cancellations. It records per-stream timings; bench_report.h summarises.
#ifndef TVQ_CLIENT_LOAD_GENERATOR_H_
#define TVQ_CLIENT_LOAD_GENERATOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "tvq/v1/tvq.grpc.pb.h"

namespace tvq::client {

struct LoadConfig {
  // Streams open at once (closed loop), or the most open at once (open loop).
  int concurrency = 8;
  // Streams to run in all; 0 = no limit (duration_seconds must be set).
  int64_t requests = 100;
  // Stop starting streams after this many seconds; 0 = no limit.
  double duration_seconds = 0;
  // Prompt length as fed to the model: eos_id then prompt_tokens - 1 random
  // ids (sent with no_eos_prefix).
  int32_t prompt_tokens = 32;
  int32_t max_new_tokens = 32;
  // Share of streams cancelled (ClientContext::TryCancel) after a random
  // number of tokens in [1, max_new_tokens - 1].
  double cancel_fraction = 0;
  // Open-loop arrivals per second (exponential gaps); 0 = closed loop.
  double rate = 0;
  // Seeds the prompts, the cancellation points, the arrival gaps and the
  // requests' sampling seeds (stream i uses seed + i).
  uint64_t seed = 1;
  bool ignore_eos = true;
  std::optional<float> temperature;
  // Deadline of each stream in seconds; 0 = none.
  double timeout_seconds = 0;
  // Share of streams that read slowly: each waits slow_read_delay_seconds
  // before asking for its next message, so the server holds their output
  // (backpressure, --max-pending-output-bytes).
  double slow_reader_fraction = 0;
  double slow_read_delay_seconds = 0.05;
  // Share of streams given the deadline short_deadline_seconds instead of
  // timeout_seconds, meant to expire mid-stream: their DEADLINE_EXCEEDED is
  // expected, not a failure.
  double short_deadline_fraction = 0;
  double short_deadline_seconds = 0.5;
};

// What the generator needs from GetModelInfo to build valid prompts.
struct PromptVocabulary {
  int32_t n_vocab = 0;
  int32_t eos_id = 0;
  // Ids never placed in a random prompt (eos, pad, unk).
  std::vector<int32_t> special_ids;
};

// One stream's outcome. Times are seconds since the run began.
struct StreamRecord {
  grpc::StatusCode code = grpc::StatusCode::OK;
  bool cancel_requested = false;
  // Read with slow_read_delay_seconds between messages.
  bool slow_reader = false;
  // Ran under short_deadline_seconds.
  bool short_deadline = false;
  // Tokens received (also for cancelled and failed streams).
  int64_t tokens = 0;
  // When the stream was due: its start (closed loop) or its scheduled
  // arrival (open loop; waiting for a free concurrency slot counts).
  double arrival_seconds = 0;
  // First message with a token; negative when none came.
  double first_token_seconds = -1;
  double end_seconds = 0;
  // One entry per token after the first: the gap since the previous
  // token-carrying message divided by the tokens in the message.
  std::vector<double> inter_token_seconds;
};

struct LoadResult {
  // From the start of the run to the end of its last stream.
  double elapsed_seconds = 0;
  // Most streams open at the same time.
  int peak_in_flight = 0;
  std::vector<StreamRecord> streams;
};

// Checks the flags a LoadConfig came from; InvalidArgument names the field.
absl::Status ValidateLoadConfig(const LoadConfig& config);

class LoadGenerator {
 public:
  // Streams are spread round-robin over `channels` (at least one).
  LoadGenerator(LoadConfig config, PromptVocabulary vocabulary,
                std::vector<std::shared_ptr<grpc::Channel>> channels);

  // Runs the whole load and returns when every stream has ended.
  LoadResult Run();

 private:
  class Stream;

  // Request `index` of the run, and its cancellation point (0 = never).
  v1::GenerateRequest MakeRequest(int64_t index);
  int64_t CancelAfterTokens(int64_t index);
  // Whether stream `index` is one of the `fraction` picked for `purpose`
  // (a reproducible draw per stream).
  bool Picked(int64_t index, double fraction, uint64_t purpose) const;
  void OnStreamDone(StreamRecord record);

  const LoadConfig config_;
  const PromptVocabulary vocabulary_;
  std::vector<int32_t> prompt_ids_;  // ids a random prompt draws from
  std::vector<std::unique_ptr<v1::TextGeneration::Stub>> stubs_;

  absl::Mutex mutex_;
  absl::CondVar stream_done_;
  int in_flight_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<StreamRecord> records_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace tvq::client

#endif  // TVQ_CLIENT_LOAD_GENERATOR_H_
