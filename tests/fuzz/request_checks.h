// What every request that passed validation must satisfy, whichever front end
// validated it (the gRPC and OpenAI request fuzzers): token ids inside the
// vocabulary, lengths and counts within the limits, finite sampling values.
// A violation aborts, so libFuzzer records the input that caused it.
#ifndef TVQ_TESTS_FUZZ_REQUEST_CHECKS_H_
#define TVQ_TESTS_FUZZ_REQUEST_CHECKS_H_

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "server/core/request_limits.h"
#include "server/model/model_config.h"
#include "server/scheduler/request.h"

namespace tvq::fuzz {

[[noreturn]] inline void Violated(const char* what) {
  std::fprintf(stderr, "validated request breaks an invariant: %s\n", what);
  std::abort();
}

inline void CheckIds(std::span<const int32_t> ids, int n_vocab,
                     const char* what) {
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab) Violated(what);
  }
}

inline void CheckGenerationRequest(const scheduler::GenerationRequest& request,
                                   const runtime::ModelConfig& config,
                                   const core::RequestLimits& limits) {
  CheckIds(request.prompt, config.n_vocab, "prompt id outside the vocabulary");
  // +1: the eos prefix the server may add.
  if (request.prompt.size() >
      static_cast<size_t>(limits.max_prompt_tokens) + 1) {
    Violated("prompt longer than max_prompt_tokens");
  }
  if (request.max_new_tokens < 0 ||
      request.max_new_tokens > limits.max_new_tokens_limit) {
    Violated("max_new_tokens outside [0, limit]");
  }
  CheckIds(request.stop_token_ids, config.n_vocab,
           "stop token id outside the vocabulary");
  if (request.stop_token_ids.size() >
      static_cast<size_t>(limits.max_stop_token_ids)) {
    Violated("too many stop token ids");
  }
  if (request.stop_sequences.size() >
      static_cast<size_t>(limits.max_stop_sequences)) {
    Violated("too many stop sequences");
  }
  for (const auto& stop : request.stop_sequences) {
    if (stop.size() > static_cast<size_t>(limits.max_stop_sequence_bytes)) {
      Violated("stop sequence longer than the limit");
    }
  }
  if (request.top_logprobs < 0 ||
      request.top_logprobs > limits.max_top_logprobs) {
    Violated("top_logprobs outside [0, limit]");
  }
  const runtime::SamplingParams& s = request.sampling;
  for (float value : {s.temperature, s.top_p, s.min_p, s.repetition_penalty,
                      s.presence_penalty, s.frequency_penalty}) {
    if (!std::isfinite(value)) Violated("a sampling value is not finite");
  }
  if (s.temperature < 0) Violated("negative temperature");
  if (s.top_k < 0) Violated("negative top_k");
  if (!(s.top_p > 0 && s.top_p <= 1)) Violated("top_p outside (0, 1]");
  if (!(s.repetition_penalty > 0)) Violated("repetition_penalty <= 0");
  if (request.request_id.size() >
      static_cast<size_t>(limits.max_request_id_length)) {
    Violated("request id longer than the limit");
  }
}

}  // namespace tvq::fuzz

#endif  // TVQ_TESTS_FUZZ_REQUEST_CHECKS_H_
