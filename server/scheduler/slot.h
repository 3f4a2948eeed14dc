// Where a running request stands in its state slot, in chronological order
// (what PlanStep plans from). Who owns a slot (free, running, retained,
// pinned) is SlotManager's SlotLife.
#ifndef TVQ_SERVER_SCHEDULER_SLOT_H_
#define TVQ_SERVER_SCHEDULER_SLOT_H_

#include <string_view>

namespace tvq::scheduler {

enum class SlotState {
  // Free: no request.
  kIdle,
  // A request was admitted; its prompt is being fed in chunks.
  kPrefilling,
  // The prompt is absorbed; one token per step.
  kDecoding,
  // The request ended this step; the slot is released at the end of it.
  kFinished,
};

constexpr std::string_view SlotStateName(SlotState state) {
  switch (state) {
    case SlotState::kIdle:
      return "idle";
    case SlotState::kPrefilling:
      return "prefilling";
    case SlotState::kDecoding:
      return "decoding";
    case SlotState::kFinished:
      return "finished";
  }
  return "unknown";
}

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_SLOT_H_
