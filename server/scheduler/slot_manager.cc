#include "server/scheduler/slot_manager.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace tvq::scheduler {

std::string_view SlotLifeName(SlotLife life) {
  switch (life) {
    case SlotLife::kFree:
      return "free";
    case SlotLife::kRunning:
      return "running";
    case SlotLife::kRetained:
      return "retained";
    case SlotLife::kPinned:
      return "pinned";
  }
  return "unknown";
}

SlotManager::SlotManager(int num_slots) : slots_(std::max(num_slots, 0)) {}

int SlotManager::CountIn(SlotLife life) const {
  return static_cast<int>(
      std::count_if(slots_.begin(), slots_.end(),
                    [life](const Slot& slot) { return slot.life == life; }));
}

absl::Status SlotManager::CheckSlot(int slot, std::string_view what) const {
  if (slot < 0 || slot >= num_slots()) {
    return absl::OutOfRangeError(absl::StrFormat("%s: slot %d outside [0, %d)",
                                                 what, slot, num_slots()));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> SlotManager::KeptSlot(const std::string& key,
                                          std::string_view what) const {
  const auto it = keys_.find(key);
  if (it == keys_.end()) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no state is kept under key \"%s\"", what, key));
  }
  const Slot& slot = slots_[it->second];
  if (slot.life == SlotLife::kRunning) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the state kept under key \"%s\" is in use by request %d", what,
        key, slot.owner));
  }
  return it->second;
}

int SlotManager::PickSlot(int exclude) const {
  int oldest_retained = -1;
  for (int i = 0; i < num_slots(); ++i) {
    if (i == exclude) continue;
    if (slots_[i].life == SlotLife::kFree) return i;
    if (slots_[i].life == SlotLife::kRetained &&
        (oldest_retained < 0 ||
         slots_[i].last_used < slots_[oldest_retained].last_used)) {
      oldest_retained = i;
    }
  }
  return oldest_retained;
}

bool SlotManager::CanAdmit(const StartFrom& start) const {
  if (start.mode == StartFrom::Mode::kEmpty) return PickSlot(-1) >= 0;
  const absl::StatusOr<int> source = KeptSlot(start.key, "admission");
  if (!source.ok()) return true;  // Admit fails it at once
  if (start.mode == StartFrom::Mode::kContinue) return true;
  return PickSlot(*source) >= 0;
}

absl::StatusOr<SlotAdmission> SlotManager::Admit(RequestHandle handle,
                                                 const StartFrom& start) {
  SlotAdmission admission;
  admission.mode = start.mode;
  if (start.mode != StartFrom::Mode::kEmpty && start.key.empty()) {
    return absl::InvalidArgumentError(
        "admission: starting from a kept state needs its key (empty key)");
  }
  int source = -1;
  if (start.mode != StartFrom::Mode::kEmpty) {
    absl::StatusOr<int> kept = KeptSlot(start.key, "admission");
    if (!kept.ok()) return kept.status();
    source = *kept;
    admission.pending_token = slots_[source].pending_token;
  }
  if (start.mode == StartFrom::Mode::kContinue) {
    Slot& slot = slots_[source];
    slot.life = SlotLife::kRunning;  // the key stays reserved by this request
    slot.owner = handle;
    slot.pending_token = -1;
    admission.slot = source;
    return admission;
  }
  const int slot = PickSlot(source);
  if (slot < 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "admission: no state slot is free or retained%s (%d slots: %d "
        "running, %d pinned)",
        source >= 0
            ? absl::StrFormat(" besides the one kept under \"%s\"", start.key)
            : "",
        num_slots(), CountIn(SlotLife::kRunning), CountIn(SlotLife::kPinned)));
  }
  Slot& taken = slots_[slot];
  if (taken.life == SlotLife::kRetained) {
    admission.evicted_key = taken.key;
    keys_.erase(taken.key);
  }
  taken = Slot{};
  taken.life = SlotLife::kRunning;
  taken.owner = handle;
  if (source >= 0) {
    slots_[source].last_used = ++clock_;
    admission.copy_from = source;
  }
  admission.slot = slot;
  return admission;
}

absl::Status SlotManager::Release(int slot) {
  if (absl::Status status = CheckSlot(slot, "release"); !status.ok()) {
    return status;
  }
  Slot& released = slots_[slot];
  if (released.life != SlotLife::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrFormat("release: slot %d is %s, not running", slot,
                        SlotLifeName(released.life)));
  }
  if (!released.key.empty()) keys_.erase(released.key);
  released = Slot{};
  return absl::OkStatus();
}

absl::Status SlotManager::Retain(int slot, const std::string& key, bool pinned,
                                 int32_t pending_token) {
  if (absl::Status status = CheckSlot(slot, "retain"); !status.ok()) {
    return status;
  }
  if (key.empty()) {
    return absl::InvalidArgumentError("retain: the key is empty");
  }
  Slot& kept = slots_[slot];
  if (kept.life != SlotLife::kRunning) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "retain: slot %d is %s, not running", slot, SlotLifeName(kept.life)));
  }
  if (const auto it = keys_.find(key);
      it != keys_.end() && it->second != slot) {
    Slot& holder = slots_[it->second];
    if (holder.life == SlotLife::kRunning) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "retain: the state under key \"%s\" is in use by request %d", key,
          holder.owner));
    }
    holder = Slot{};  // replaced
    keys_.erase(it);
  }
  if (!kept.key.empty() && kept.key != key) keys_.erase(kept.key);
  kept.life = pinned ? SlotLife::kPinned : SlotLife::kRetained;
  kept.owner = 0;
  kept.key = key;
  kept.pending_token = pending_token;
  kept.last_used = ++clock_;
  keys_[key] = slot;
  return absl::OkStatus();
}

absl::Status SlotManager::Pin(const std::string& key) {
  absl::StatusOr<int> slot = KeptSlot(key, "pin");
  if (!slot.ok()) return slot.status();
  slots_[*slot].life = SlotLife::kPinned;
  return absl::OkStatus();
}

absl::Status SlotManager::Unpin(const std::string& key) {
  absl::StatusOr<int> slot = KeptSlot(key, "unpin");
  if (!slot.ok()) return slot.status();
  slots_[*slot].life = SlotLife::kRetained;
  return absl::OkStatus();
}

absl::Status SlotManager::Drop(const std::string& key) {
  absl::StatusOr<int> slot = KeptSlot(key, "drop");
  if (!slot.ok()) return slot.status();
  slots_[*slot] = Slot{};
  keys_.erase(key);
  return absl::OkStatus();
}

std::vector<KeptState> SlotManager::Kept() const {
  std::vector<KeptState> kept;
  for (int i = 0; i < num_slots(); ++i) {
    const Slot& slot = slots_[i];
    if (slot.life != SlotLife::kRetained && slot.life != SlotLife::kPinned) {
      continue;
    }
    kept.push_back({.key = slot.key,
                    .slot = i,
                    .pinned = slot.life == SlotLife::kPinned,
                    .pending_token = slot.pending_token,
                    .last_used = slot.last_used});
  }
  return kept;
}

std::optional<KeptState> SlotManager::Find(const std::string& key) const {
  const auto it = keys_.find(key);
  if (it == keys_.end()) return std::nullopt;
  const Slot& slot = slots_[it->second];
  if (slot.life == SlotLife::kRunning) return std::nullopt;
  return KeptState{.key = slot.key,
                   .slot = it->second,
                   .pinned = slot.life == SlotLife::kPinned,
                   .pending_token = slot.pending_token,
                   .last_used = slot.last_used};
}

}  // namespace tvq::scheduler
