// The limits every request is checked against, whatever front end it came
// through (tvq-server flags; GetModelInfo reports them as ServerLimits).
#ifndef TVQ_SERVER_CORE_REQUEST_LIMITS_H_
#define TVQ_SERVER_CORE_REQUEST_LIMITS_H_

#include <cstdint>

namespace tvq::core {

struct RequestLimits {
  int max_new_tokens_limit = 8192;
  int default_max_new_tokens = 256;
  int max_prompt_tokens = 131072;
  int max_stop_sequences = 16;
  int max_stop_sequence_bytes = 256;
  int max_stop_token_ids = 64;
  int max_top_logprobs = 20;
  int max_request_id_length = 128;
  // Output a stream may hold unsent because its client does not read
  // (--max-pending-output-bytes); past it the stream ends with
  // RESOURCE_EXHAUSTED and its slot is freed.
  int64_t max_pending_output_bytes = int64_t{4} << 20;
  // Largest request message (--max-request-bytes): gRPC's max receive
  // message size, the HTTP front end's body limit.
  int64_t max_request_bytes = int64_t{64} << 20;
  // Transport limits, reported with the others (GetModelInfo): connections
  // open at once (0 = no cap) and calls per connection.
  int max_connections = 1024;
  int max_concurrent_streams = 1024;

  // Largest Detokenize input: a whole sequence, prompt and generation.
  int64_t max_detokenize_tokens() const {
    return int64_t{max_prompt_tokens} + max_new_tokens_limit;
  }
};

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_REQUEST_LIMITS_H_
