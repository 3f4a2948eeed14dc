// What a score adds up to beyond its per-token logprobs: how many scored
// tokens are bytes, and the bits per byte of byte models.
#ifndef TVQ_SERVER_CORE_SCORE_SUMMARY_H_
#define TVQ_SERVER_CORE_SCORE_SUMMARY_H_

#include <cstdint>
#include <optional>

#include "server/model/model_config.h"
#include "server/scheduler/request.h"

namespace tvq::core {

struct ScoreSummary {
  // Scored tokens other than pad, eos and unk.
  int64_t scored_bytes = 0;
  // -total_logprob / ln 2 / scored_bytes: only for byte tokenizers and when
  // at least one byte was scored.
  std::optional<double> bits_per_byte;
};

ScoreSummary SummarizeScore(const runtime::ModelConfig& config,
                            const scheduler::ScoreResult& result);

}  // namespace tvq::core

#endif  // TVQ_SERVER_CORE_SCORE_SUMMARY_H_
