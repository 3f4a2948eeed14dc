#include "server/scheduler/output_processor.h"

#include <algorithm>
#include <utility>

namespace tvq::scheduler {

OutputProcessor::OutputProcessor(const GenerationRequest& request,
                                 const runtime::Tokenizer& tokenizer,
                                 int n_vocab, int32_t eos_id)
    : request_(request),
      eos_id_(eos_id),
      sampler_(request.sampling, n_vocab),
      detokenizer_(tokenizer),
      stops_(request.stop_sequences) {
  sampler_.ObservePrompt(request.prompt);
}

absl::StatusOr<int32_t> OutputProcessor::Sample(std::span<const float> row,
                                                int index) {
  return sampler_.Sample(row, static_cast<uint64_t>(index));
}

absl::StatusOr<EmittedToken> OutputProcessor::Process(
    int32_t token, std::span<const float> row) {
  EmittedToken emitted;
  TokenUpdate& update = emitted.update;
  update.token_ids.push_back(token);
  if (request_.logprobs || request_.top_logprobs > 0) {
    TokenLogprob entry;
    entry.token_id = token;
    entry.logprob = row[token];
    runtime::TopAlternatives(row, request_.top_logprobs,
                             &entry.top_alternatives);
    update.logprobs.push_back(std::move(entry));
  }
  if (!request_.ignore_eos && token == eos_id_) {
    emitted.reason = FinishReason::kEos;
    emitted.matched_stop_token_id = token;
  } else if (std::find(request_.stop_token_ids.begin(),
                       request_.stop_token_ids.end(),
                       token) != request_.stop_token_ids.end()) {
    emitted.reason = FinishReason::kStopToken;
    emitted.matched_stop_token_id = token;
  } else {
    absl::StatusOr<std::string> text = detokenizer_.Append(token);
    if (!text.ok()) return text.status();
    runtime::StopSequenceMatcher::Result matched = stops_.Append(*text);
    update.text = std::move(matched.released);
    if (matched.matched) {
      emitted.reason = FinishReason::kStopSequence;
      emitted.matched_stop_sequence = std::move(matched.stop_sequence);
    }
  }
  return emitted;
}

void OutputProcessor::Finish(EmittedToken& ending) {
  if (ending.reason == FinishReason::kStopSequence) return;
  runtime::StopSequenceMatcher::Result matched =
      stops_.Append(detokenizer_.Finish());
  ending.update.text += matched.released;
  if (matched.matched) {
    if (ending.reason != FinishReason::kCancelled) {
      ending.reason = FinishReason::kStopSequence;
      ending.matched_stop_token_id = -1;
    }
    ending.matched_stop_sequence = std::move(matched.stop_sequence);
  } else {
    ending.update.text += stops_.Flush();
  }
}

}  // namespace tvq::scheduler
