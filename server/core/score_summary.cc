#include "server/core/score_summary.h"

#include <cmath>
#include <cstdint>

namespace tvq::core {

ScoreSummary SummarizeScore(const runtime::ModelConfig& config,
                            const scheduler::ScoreResult& result) {
  ScoreSummary summary;
  for (const scheduler::TokenLogprob& entry : result.token_logprobs) {
    if (entry.token_id != config.pad_id && entry.token_id != config.eos_id &&
        entry.token_id != config.unk_id) {
      ++summary.scored_bytes;
    }
  }
  if (config.tokenizer_kind == runtime::TokenizerKind::kByte &&
      summary.scored_bytes > 0) {
    summary.bits_per_byte = -result.total_logprob / std::log(2.0) /
                            static_cast<double>(summary.scored_bytes);
  }
  return summary;
}

}  // namespace tvq::core
