// Which work one scheduler step does: a pure function from the slots' states
// to a plan, so that it can be tested without threads or a model.
//
// Rules:
// - Every decoding slot gets its one token (decode is never deferred: a
//   running stream must keep flowing).
// - Then prefilling slots, oldest admission first, each get one chunk of
//   min(prefill_chunk, tokens left) while the step stays within
//   step_token_budget. Chunk sizes depend only on the request itself (not on
//   its peers), so a prompt is always cut at the same positions.
// - Progress: when prefill work exists but nothing fits, the oldest
//   prefilling slot still gets its chunk (the step may then exceed the budget
//   by at most one chunk).
#ifndef TVQ_SERVER_SCHEDULER_BATCH_POLICY_H_
#define TVQ_SERVER_SCHEDULER_BATCH_POLICY_H_

#include <cstdint>
#include <span>
#include <vector>

#include "server/scheduler/slot.h"

namespace tvq::scheduler {

// What the policy knows of one slot.
struct SlotView {
  int slot = 0;
  SlotState state = SlotState::kIdle;
  // kPrefilling: prompt tokens not yet fed.
  int64_t prefill_tokens_left = 0;
  // Lower = admitted earlier.
  uint64_t admission_order = 0;
};

struct BatchPolicyOptions {
  // Tokens (decode + prefill) one step aims not to exceed; >= 1.
  int step_token_budget = 512;
  // Largest prefill chunk for one slot in one step; >= 1.
  int prefill_chunk = 256;
};

struct PrefillChunk {
  int slot = 0;
  int num_tokens = 0;
  bool operator==(const PrefillChunk&) const = default;
};

struct BatchPlan {
  // Slots that decode one token, in ascending slot order.
  std::vector<int> decode_slots;
  // Prefill chunks in the order they should run (oldest admission first).
  std::vector<PrefillChunk> prefill_chunks;

  int64_t TotalTokens() const;
  bool empty() const { return decode_slots.empty() && prefill_chunks.empty(); }
};

BatchPlan PlanStep(std::span<const SlotView> slots,
                   const BatchPolicyOptions& options);

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_BATCH_POLICY_H_
