#include "server/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace tvq::runtime {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Orders ids by value (descending), then id (ascending): total and
// deterministic.
struct ByValueThenId {
  const float* values;
  bool operator()(int32_t a, int32_t b) const {
    if (values[a] != values[b]) return values[a] > values[b];
    return a < b;
  }
};

}  // namespace

double CounterUniform(uint64_t seed, uint64_t step) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ SplitMix64(~step));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

void TopAlternatives(std::span<const float> logprobs, int count,
                     std::vector<TokenAlternative>* out) {
  out->clear();
  const int n = static_cast<int>(logprobs.size());
  count = std::clamp(count, 0, n);
  if (count == 0) return;
  // A small sorted buffer beats sorting the whole row (count <= 20).
  std::vector<int32_t> best;
  best.reserve(count + 1);
  const ByValueThenId before{logprobs.data()};
  for (int32_t id = 0; id < n; ++id) {
    if (static_cast<int>(best.size()) == count && !before(id, best.back())) {
      continue;
    }
    best.insert(std::upper_bound(best.begin(), best.end(), id, before), id);
    if (static_cast<int>(best.size()) > count) best.pop_back();
  }
  for (int32_t id : best) out->push_back({id, logprobs[id]});
}

Sampler::Sampler(const SamplingParams& params, int n_vocab)
    : params_(params), n_vocab_(n_vocab), seen_(n_vocab, false) {}

void Sampler::ObservePrompt(std::span<const int32_t> tokens) {
  for (int32_t id : tokens) {
    if (id < 0 || id >= n_vocab_ || seen_[id]) continue;
    seen_[id] = true;
    seen_list_.push_back(id);
  }
}

bool Sampler::ApplyPenalties(std::span<const float> logprobs) {
  const bool repetition = params_.repetition_penalty != 1.0f;
  const bool presence = params_.presence_penalty != 0.0f;
  const bool frequency = params_.frequency_penalty != 0.0f;
  if (!(repetition && !seen_list_.empty()) &&
      !((presence || frequency) && !generated_counts_.empty())) {
    return false;
  }
  adjusted_.assign(logprobs.begin(), logprobs.end());
  if (repetition) {
    const float penalty = params_.repetition_penalty;
    for (int32_t id : seen_list_) {
      float& x = adjusted_[id];
      x = x > 0 ? x / penalty : x * penalty;
    }
  }
  if (presence || frequency) {
    for (const auto& [id, count] : generated_counts_) {
      adjusted_[id] -= params_.presence_penalty +
                       params_.frequency_penalty * static_cast<float>(count);
    }
  }
  return true;
}

absl::StatusOr<int32_t> Sampler::Sample(std::span<const float> logprobs,
                                        uint64_t step) {
  if (static_cast<int>(logprobs.size()) != n_vocab_) {
    return absl::InternalError(
        absl::StrFormat("sampler: logprob row has %d entries, expected %d",
                        logprobs.size(), n_vocab_));
  }
  const float* values =
      ApplyPenalties(logprobs) ? adjusted_.data() : logprobs.data();

  // The most likely token (lowest id on ties); NaN entries never win.
  int32_t best = -1;
  for (int32_t id = 0; id < n_vocab_; ++id) {
    if (std::isnan(values[id])) continue;
    if (best < 0 || values[id] > values[best]) best = id;
  }
  if (best < 0 || !std::isfinite(values[best])) {
    return absl::InternalError(
        "sampler: the next-token distribution has no finite logprob");
  }

  int32_t chosen = best;
  if (params_.temperature > 0) {
    const double inverse_temperature = 1.0 / params_.temperature;
    const double max_value = values[best];
    const bool truncate = (params_.top_k > 0 && params_.top_k < n_vocab_) ||
                          params_.top_p < 1.0f || params_.min_p > 0.0f;
    // Candidates: every token with a non-zero weight, in a deterministic
    // order (by id, or by value then id when truncating).
    order_.clear();
    for (int32_t id = 0; id < n_vocab_; ++id) {
      if (std::isfinite(values[id])) order_.push_back(id);
    }
    if (truncate) {
      const ByValueThenId before{values};
      size_t keep = order_.size();
      if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
        keep = params_.top_k;
        std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(),
                          before);
        order_.resize(keep);
      } else {
        std::sort(order_.begin(), order_.end(), before);
      }
    }
    weights_.resize(order_.size());
    double total = 0;
    for (size_t i = 0; i < order_.size(); ++i) {
      weights_[i] =
          std::exp((static_cast<double>(values[order_[i]]) - max_value) *
                   inverse_temperature);
      total += weights_[i];
    }
    if (truncate) {
      size_t keep = order_.size();
      if (params_.top_p < 1.0f) {
        const double target = params_.top_p * total;
        double cumulative = 0;
        for (size_t i = 0; i < keep; ++i) {
          cumulative += weights_[i];
          if (cumulative >= target) {
            keep = i + 1;
            break;
          }
        }
      }
      if (params_.min_p > 0.0f) {
        // weights_[0] is the largest weight (sorted).
        const double threshold = params_.min_p * weights_[0];
        size_t above = 1;
        while (above < keep && weights_[above] >= threshold) ++above;
        keep = above;
      }
      order_.resize(keep);
      weights_.resize(keep);
      total = 0;
      for (double w : weights_) total += w;
    }
    const double target = CounterUniform(params_.seed, step) * total;
    double cumulative = 0;
    chosen = order_.back();
    for (size_t i = 0; i < order_.size(); ++i) {
      cumulative += weights_[i];
      if (target < cumulative) {
        chosen = order_[i];
        break;
      }
    }
  }

  ++generated_counts_[chosen];
  if (!seen_[chosen]) {
    seen_[chosen] = true;
    seen_list_.push_back(chosen);
  }
  return chosen;
}

}  // namespace tvq::runtime
