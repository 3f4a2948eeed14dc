#include "server/scheduler/batch_policy.h"

#include <algorithm>

namespace tvq::scheduler {

int64_t BatchPlan::TotalTokens() const {
  int64_t total = static_cast<int64_t>(decode_slots.size());
  for (const PrefillChunk& chunk : prefill_chunks) total += chunk.num_tokens;
  return total;
}

BatchPlan PlanStep(std::span<const SlotView> slots,
                   const BatchPolicyOptions& options) {
  BatchPlan plan;
  std::vector<const SlotView*> prefilling;
  for (const SlotView& view : slots) {
    if (view.state == SlotState::kDecoding) {
      plan.decode_slots.push_back(view.slot);
    } else if (view.state == SlotState::kPrefilling &&
               view.prefill_tokens_left > 0) {
      prefilling.push_back(&view);
    }
  }
  std::sort(plan.decode_slots.begin(), plan.decode_slots.end());
  std::sort(prefilling.begin(), prefilling.end(),
            [](const SlotView* a, const SlotView* b) {
              if (a->admission_order != b->admission_order) {
                return a->admission_order < b->admission_order;
              }
              return a->slot < b->slot;
            });

  const int64_t budget = std::max(1, options.step_token_budget);
  const int64_t chunk_limit = std::max(1, options.prefill_chunk);
  int64_t used = static_cast<int64_t>(plan.decode_slots.size());
  for (const SlotView* view : prefilling) {
    const int64_t chunk = std::min(chunk_limit, view->prefill_tokens_left);
    if (used + chunk <= budget || plan.prefill_chunks.empty()) {
      plan.prefill_chunks.push_back({view->slot, static_cast<int>(chunk)});
      used += chunk;
    }
  }
  return plan;
}

}  // namespace tvq::scheduler
