// SlotManager: every life-cycle transition, LRU eviction of retained slots,
// pinned slots never evicted, and the errors of bad transitions.
#include "server/scheduler/slot_manager.h"

#include <string>

#include "gtest/gtest.h"

namespace tvq::scheduler {
namespace {

// Whether `status`'s message contains `part`.
bool MessageHas(const absl::Status& status, std::string_view part) {
  return std::string(status.message()).find(part) != std::string::npos;
}

StartFrom Empty() { return {}; }
StartFrom Continue(std::string key) {
  return {.mode = StartFrom::Mode::kContinue, .key = std::move(key)};
}
StartFrom Copy(std::string key) {
  return {.mode = StartFrom::Mode::kCopy, .key = std::move(key)};
}

// Admits `handle` from an empty state and returns its slot.
int AdmitEmpty(SlotManager& slots, RequestHandle handle) {
  absl::StatusOr<SlotAdmission> admission = slots.Admit(handle, Empty());
  EXPECT_TRUE(admission.ok()) << admission.status();
  return admission.ok() ? admission->slot : -1;
}

TEST(SlotManagerTest, StartsFreeAndAdmitsInSlotOrder) {
  SlotManager slots(3);
  EXPECT_EQ(slots.CountIn(SlotLife::kFree), 3);
  EXPECT_EQ(slots.available(), 3);
  absl::StatusOr<SlotAdmission> first = slots.Admit(7, Empty());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->slot, 0);
  EXPECT_EQ(first->mode, StartFrom::Mode::kEmpty);
  EXPECT_EQ(first->copy_from, -1);
  EXPECT_FALSE(first->evicted_key.has_value());
  EXPECT_EQ(slots.life(0), SlotLife::kRunning);
  EXPECT_EQ(slots.owner(0), 7u);
  EXPECT_EQ(AdmitEmpty(slots, 8), 1);
  EXPECT_EQ(slots.CountIn(SlotLife::kRunning), 2);
  EXPECT_EQ(slots.available(), 1);
}

TEST(SlotManagerTest, ReleaseFreesARunningSlot) {
  SlotManager slots(2);
  const int slot = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Release(slot).ok());
  EXPECT_EQ(slots.life(slot), SlotLife::kFree);
  EXPECT_EQ(slots.owner(slot), 0u);
  EXPECT_EQ(AdmitEmpty(slots, 2), slot);  // the first free slot again
}

TEST(SlotManagerTest, NoSlotLeftIsResourceExhausted) {
  SlotManager slots(1);
  AdmitEmpty(slots, 1);
  EXPECT_FALSE(slots.CanAdmit(Empty()));
  absl::StatusOr<SlotAdmission> refused = slots.Admit(2, Empty());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(refused.status(), "no state slot is free or retained"))
      << refused.status();
}

TEST(SlotManagerTest, RetainKeepsTheStateUnderAKey) {
  SlotManager slots(2);
  const int slot = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Retain(slot, "a", /*pinned=*/false, 42).ok());
  EXPECT_EQ(slots.life(slot), SlotLife::kRetained);
  EXPECT_EQ(slots.owner(slot), 0u);
  // Retained counts as available (it may be evicted), not as running.
  EXPECT_EQ(slots.CountIn(SlotLife::kRunning), 0);
  EXPECT_EQ(slots.available(), 2);
  std::optional<KeptState> kept = slots.Find("a");
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->slot, slot);
  EXPECT_FALSE(kept->pinned);
  EXPECT_EQ(kept->pending_token, 42);
  ASSERT_EQ(slots.Kept().size(), 1u);
  EXPECT_EQ(slots.Kept()[0].key, "a");
}

TEST(SlotManagerTest, RetainPinnedAndPinUnpin) {
  SlotManager slots(2);
  const int slot = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Retain(slot, "p", /*pinned=*/true).ok());
  EXPECT_EQ(slots.life(slot), SlotLife::kPinned);
  EXPECT_EQ(slots.available(), 1);  // pinned is not available
  ASSERT_TRUE(slots.Unpin("p").ok());
  EXPECT_EQ(slots.life(slot), SlotLife::kRetained);
  ASSERT_TRUE(slots.Pin("p").ok());
  EXPECT_EQ(slots.life(slot), SlotLife::kPinned);
  EXPECT_TRUE(slots.Find("p")->pinned);
}

TEST(SlotManagerTest, DropFreesAKeptState) {
  SlotManager slots(1);
  const int slot = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Retain(slot, "a", /*pinned=*/true).ok());
  ASSERT_TRUE(slots.Drop("a").ok());
  EXPECT_EQ(slots.life(slot), SlotLife::kFree);
  EXPECT_FALSE(slots.Find("a").has_value());
  EXPECT_EQ(slots.Drop("a").code(), absl::StatusCode::kNotFound);
}

TEST(SlotManagerTest, ContinueRunsInTheKeptSlotAndReservesTheKey) {
  SlotManager slots(2);
  const int slot = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Retain(slot, "a", /*pinned=*/false, 9).ok());
  absl::StatusOr<SlotAdmission> admission = slots.Admit(2, Continue("a"));
  ASSERT_TRUE(admission.ok()) << admission.status();
  EXPECT_EQ(admission->slot, slot);
  EXPECT_EQ(admission->mode, StartFrom::Mode::kContinue);
  EXPECT_EQ(admission->pending_token, 9);
  EXPECT_EQ(slots.life(slot), SlotLife::kRunning);
  EXPECT_EQ(slots.owner(slot), 2u);
  EXPECT_FALSE(slots.Find("a").has_value());  // not kept while running
  // A second request on the same key fails at once, naming it.
  EXPECT_TRUE(slots.CanAdmit(Continue("a")));
  absl::StatusOr<SlotAdmission> second = slots.Admit(3, Copy("a"));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(MessageHas(second.status(), "\"a\" is in use by request 2"))
      << second.status();
  // Another slot cannot take the key while it runs.
  const int other = AdmitEmpty(slots, 4);
  EXPECT_EQ(slots.Retain(other, "a", false).code(),
            absl::StatusCode::kFailedPrecondition);
  // It ends: kept again under the same key...
  ASSERT_TRUE(slots.Retain(slot, "a", /*pinned=*/false).ok());
  EXPECT_EQ(slots.Find("a")->slot, slot);
  EXPECT_EQ(slots.Find("a")->pending_token, -1);
  // ...or released, which frees the key.
  ASSERT_TRUE(slots.Admit(5, Continue("a")).ok());
  ASSERT_TRUE(slots.Release(slot).ok());
  EXPECT_EQ(slots.Admit(6, Continue("a")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SlotManagerTest, CopyTakesAnotherSlotAndLeavesTheSourceKept) {
  SlotManager slots(2);
  const int source = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Retain(source, "a", /*pinned=*/false, 5).ok());
  absl::StatusOr<SlotAdmission> admission = slots.Admit(2, Copy("a"));
  ASSERT_TRUE(admission.ok()) << admission.status();
  EXPECT_NE(admission->slot, source);
  EXPECT_EQ(admission->mode, StartFrom::Mode::kCopy);
  EXPECT_EQ(admission->copy_from, source);
  EXPECT_EQ(admission->pending_token, 5);
  EXPECT_EQ(slots.life(source), SlotLife::kRetained);
  EXPECT_EQ(slots.Find("a")->slot, source);
  // Success: keeping the copy under the same key replaces the source.
  ASSERT_TRUE(slots.Retain(admission->slot, "a", /*pinned=*/false).ok());
  EXPECT_EQ(slots.life(source), SlotLife::kFree);
  EXPECT_EQ(slots.Find("a")->slot, admission->slot);
  ASSERT_EQ(slots.Kept().size(), 1u);
}

TEST(SlotManagerTest, CopyNeverEvictsItsSource) {
  SlotManager slots(1);
  const int source = AdmitEmpty(slots, 1);
  ASSERT_TRUE(slots.Retain(source, "a", false).ok());
  EXPECT_FALSE(slots.CanAdmit(Copy("a")));
  absl::StatusOr<SlotAdmission> refused = slots.Admit(2, Copy("a"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(MessageHas(refused.status(), "besides the one kept under \"a\""))
      << refused.status();
  EXPECT_EQ(slots.life(source), SlotLife::kRetained);
}

TEST(SlotManagerTest, EvictsTheLeastRecentlyUsedRetainedSlot) {
  SlotManager slots(3);
  for (RequestHandle handle : {1, 2, 3}) AdmitEmpty(slots, handle);
  ASSERT_TRUE(slots.Retain(0, "old", false).ok());
  ASSERT_TRUE(slots.Retain(1, "mid", false).ok());
  ASSERT_TRUE(slots.Retain(2, "new", false).ok());
  // Copying from "old" makes it the most recently used; it is the source, so
  // "mid" goes first.
  absl::StatusOr<SlotAdmission> copy = slots.Admit(4, Copy("old"));
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ(copy->slot, 1);
  EXPECT_EQ(copy->evicted_key, "mid");
  ASSERT_TRUE(slots.Release(copy->slot).ok());
  // Free slots come before any eviction.
  absl::StatusOr<SlotAdmission> free_first = slots.Admit(5, Empty());
  ASSERT_TRUE(free_first.ok());
  EXPECT_EQ(free_first->slot, 1);
  EXPECT_FALSE(free_first->evicted_key.has_value());
  // Then the oldest: "new" (retained before "old" was used again).
  absl::StatusOr<SlotAdmission> evicting = slots.Admit(6, Empty());
  ASSERT_TRUE(evicting.ok());
  EXPECT_EQ(evicting->slot, 2);
  EXPECT_EQ(evicting->evicted_key, "new");
  EXPECT_FALSE(slots.Find("new").has_value());
  EXPECT_TRUE(slots.Find("old").has_value());
}

TEST(SlotManagerTest, PinnedSlotsAreNeverEvicted) {
  SlotManager slots(2);
  AdmitEmpty(slots, 1);
  AdmitEmpty(slots, 2);
  ASSERT_TRUE(slots.Retain(0, "pinned", /*pinned=*/true).ok());
  ASSERT_TRUE(slots.Retain(1, "retained", /*pinned=*/false).ok());
  absl::StatusOr<SlotAdmission> admission = slots.Admit(3, Empty());
  ASSERT_TRUE(admission.ok());
  EXPECT_EQ(admission->slot, 1);
  EXPECT_EQ(admission->evicted_key, "retained");
  // Only the pinned one is left besides the running one: no room.
  EXPECT_FALSE(slots.CanAdmit(Empty()));
  EXPECT_EQ(slots.Admit(4, Empty()).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(slots.life(0), SlotLife::kPinned);
  // A pinned state can still be copied or continued.
  ASSERT_TRUE(slots.Release(1).ok());
  EXPECT_TRUE(slots.Admit(5, Copy("pinned")).ok());
}

TEST(SlotManagerTest, RetainReplacesAKeptStateUnderTheSameKey) {
  SlotManager slots(2);
  AdmitEmpty(slots, 1);
  AdmitEmpty(slots, 2);
  ASSERT_TRUE(slots.Retain(0, "a", /*pinned=*/true).ok());
  ASSERT_TRUE(slots.Retain(1, "a", /*pinned=*/false).ok());
  EXPECT_EQ(slots.life(0), SlotLife::kFree);
  EXPECT_EQ(slots.life(1), SlotLife::kRetained);
  EXPECT_EQ(slots.Find("a")->slot, 1);
}

TEST(SlotManagerTest, BadTransitionsNameTheProblem) {
  SlotManager slots(2);
  absl::Status status = slots.Release(0);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "release: slot 0 is free, not running");
  status = slots.Retain(1, "a", false);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "retain: slot 1 is free, not running");
  status = slots.Release(2);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(status.message(), "release: slot 2 outside [0, 2)");
  const int slot = AdmitEmpty(slots, 1);
  status = slots.Retain(slot, "", false);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "retain: the key is empty");
  ASSERT_TRUE(slots.Retain(slot, "a", false).ok());
  status = slots.Release(slot);
  EXPECT_EQ(status.message(), "release: slot 0 is retained, not running");
  status = slots.Pin("missing");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "pin: no state is kept under key \"missing\"");
  absl::StatusOr<SlotAdmission> admission = slots.Admit(2, Continue(""));
  EXPECT_EQ(admission.status().code(), absl::StatusCode::kInvalidArgument);
  admission = slots.Admit(2, Copy("missing"));
  EXPECT_EQ(admission.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(admission.status().message(),
            "admission: no state is kept under key \"missing\"");
  // Unknown keys do not make a request wait: it is admitted and fails.
  EXPECT_TRUE(slots.CanAdmit(Copy("missing")));
}

}  // namespace
}  // namespace tvq::scheduler
