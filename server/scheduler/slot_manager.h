// Who owns each state slot of the pool: nobody, a running request, or a key
// (a state kept after its request). Bookkeeping only: the manager never
// touches the state itself; the scheduler resets or copies slots as the
// admission it returns says (StatePool::Reset / Copy).
//
// Life cycle of one slot (SlotLife):
//
//   kFree ──Admit(kEmpty)──────────────► kRunning   (the caller resets it)
//   kRetained ──Admit(kEmpty), evicted─► kRunning   (LRU retained slot reused
//                                                    when no slot is free)
//   kRetained/kPinned ──Admit(kContinue, key)──► kRunning  (the request goes
//                                                 on from the state in place;
//                                                 the key leaves the slot)
//   kRetained/kPinned ──Admit(kCopy, key)──► unchanged; another slot (free or
//                                            evicted) becomes kRunning and the
//                                            caller copies the source into it
//   kRunning ──Release──► kFree                     (today's default end)
//   kRunning ──Retain(key, pinned=false)──► kRetained
//   kRunning ──Retain(key, pinned=true)───► kPinned
//   kRetained ◄──Pin / Unpin──► kPinned
//   kRetained/kPinned ──Drop(key)──► kFree
//
// Keys are unique: Retain under a key that another retained or pinned slot
// holds replaces it (that slot becomes kFree), so "start from a copy, keep
// the result under the same key" advances a state only when its request
// succeeds. A key whose state is running (continued in place) cannot be
// admitted again or retained by another slot until that request ends:
// FAILED_PRECONDITION naming the key.
//
// Eviction: only kRetained slots, least recently used first (retained, or
// admitted from by kCopy, longest ago). kPinned slots are never evicted.
//
// Not thread-safe: the scheduler's loop thread owns it (TensorRT-LLM's
// sequenceSlotManager makes the same choice).
#ifndef TVQ_SERVER_SCHEDULER_SLOT_MANAGER_H_
#define TVQ_SERVER_SCHEDULER_SLOT_MANAGER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/scheduler/request.h"

namespace tvq::scheduler {

enum class SlotLife {
  // Holds nothing worth keeping; admission takes it first.
  kFree,
  // Owned by a running request.
  kRunning,
  // A state kept under a key after its request; a later request may continue
  // from it or copy it; evicted (least recently used first) when a request
  // needs a slot and none is free.
  kRetained,
  // Like kRetained, but never evicted.
  kPinned,
};

// "free", "running", "retained", "pinned".
std::string_view SlotLifeName(SlotLife life);

// A kept state, as listed by SlotManager::Kept.
struct KeptState {
  std::string key;
  int slot = -1;
  bool pinned = false;
  // The token a generation sampled last and did not feed: the state holds
  // everything before it, so a continuation feeds it first; -1 if none.
  int32_t pending_token = -1;
  // Larger = used more recently.
  uint64_t last_used = 0;
};

// What admission decided; the scheduler carries it out on the state pool.
struct SlotAdmission {
  // The slot the request runs in (kRunning now).
  int slot = -1;
  // kEmpty: reset `slot`. kContinue: use it as it is. kCopy: copy
  // `copy_from` into `slot`.
  StartFrom::Mode mode = StartFrom::Mode::kEmpty;
  int copy_from = -1;
  // The retained key evicted to make room, if any.
  std::optional<std::string> evicted_key;
  // The pending token of the state started from (-1 if none or kEmpty).
  int32_t pending_token = -1;
};

class SlotManager {
 public:
  explicit SlotManager(int num_slots);

  int num_slots() const { return static_cast<int>(slots_.size()); }
  SlotLife life(int slot) const { return slots_[slot].life; }
  // The request running in `slot` (0 unless kRunning).
  RequestHandle owner(int slot) const { return slots_[slot].owner; }

  int CountIn(SlotLife life) const;
  // Slots a new request could take right now: free plus retained.
  int available() const {
    return CountIn(SlotLife::kFree) + CountIn(SlotLife::kRetained);
  }

  // Whether Admit(start) would find room now. True also when Admit would
  // fail for another reason (unknown key, key in use): the request is then
  // admitted and fails at once instead of waiting.
  bool CanAdmit(const StartFrom& start) const;

  // Gives `handle` a slot as `start` says. Errors: NOT_FOUND (no state under
  // the key), FAILED_PRECONDITION (the key's state is running), RESOURCE_
  // EXHAUSTED (no free or retained slot; for kCopy, none besides the
  // source), INVALID_ARGUMENT (empty key with kContinue or kCopy).
  absl::StatusOr<SlotAdmission> Admit(RequestHandle handle,
                                      const StartFrom& start);

  // kRunning -> kFree.
  absl::Status Release(int slot);
  // kRunning -> kRetained (or kPinned) under `key`; replaces the kept state
  // another slot holds under `key` (that slot becomes kFree).
  absl::Status Retain(int slot, const std::string& key, bool pinned,
                      int32_t pending_token = -1);
  // kRetained <-> kPinned.
  absl::Status Pin(const std::string& key);
  absl::Status Unpin(const std::string& key);
  // kRetained/kPinned -> kFree.
  absl::Status Drop(const std::string& key);

  // The kept states, in slot order.
  std::vector<KeptState> Kept() const;
  // The kept state under `key`, if any.
  std::optional<KeptState> Find(const std::string& key) const;

 private:
  struct Slot {
    SlotLife life = SlotLife::kFree;
    RequestHandle owner = 0;
    // kRetained / kPinned: the key; kRunning: the key continued in place
    // (reserved until the request ends), or empty.
    std::string key;
    int32_t pending_token = -1;
    uint64_t last_used = 0;
  };

  absl::Status CheckSlot(int slot, std::string_view what) const;
  // The kept slot under `key`, or an error naming the key.
  absl::StatusOr<int> KeptSlot(const std::string& key,
                               std::string_view what) const;
  // A free slot, or the least recently used retained one other than
  // `exclude`; -1 if none.
  int PickSlot(int exclude) const;

  std::vector<Slot> slots_;
  // Key -> slot, for kept states and for keys continued in place.
  absl::flat_hash_map<std::string, int> keys_;
  uint64_t clock_ = 0;
};

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_SLOT_MANAGER_H_
