#include "server/scheduler/batch_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace tvq::scheduler {
namespace {

SlotView Decoding(int slot) {
  return {.slot = slot, .state = SlotState::kDecoding};
}
SlotView Prefilling(int slot, int64_t left, uint64_t order) {
  return {.slot = slot,
          .state = SlotState::kPrefilling,
          .prefill_tokens_left = left,
          .admission_order = order};
}

TEST(BatchPolicyTest, NothingToDo) {
  const std::vector<SlotView> slots = {
      {.slot = 0, .state = SlotState::kIdle},
      {.slot = 1, .state = SlotState::kFinished}};
  const BatchPlan plan = PlanStep(slots, {});
  EXPECT_TRUE(plan.empty());
  EXPECT_EQ(plan.TotalTokens(), 0);
}

TEST(BatchPolicyTest, EveryDecodingSlotDecodesInSlotOrder) {
  const std::vector<SlotView> slots = {Decoding(5), Decoding(1), Decoding(3)};
  const BatchPlan plan = PlanStep(slots, {.step_token_budget = 2});
  // Decode is never deferred, even beyond the budget.
  EXPECT_EQ(plan.decode_slots, (std::vector<int>{1, 3, 5}));
  EXPECT_TRUE(plan.prefill_chunks.empty());
}

TEST(BatchPolicyTest, DecodeFirstThenPrefillUpToTheBudget) {
  const std::vector<SlotView> slots = {
      Decoding(0), Decoding(1), Prefilling(2, 1000, 7), Prefilling(3, 1000, 8)};
  const BatchPlan plan =
      PlanStep(slots, {.step_token_budget = 300, .prefill_chunk = 256});
  EXPECT_EQ(plan.decode_slots, (std::vector<int>{0, 1}));
  // 2 + 256 fits, another 256 does not.
  EXPECT_EQ(plan.prefill_chunks, (std::vector<PrefillChunk>{{2, 256}}));
  EXPECT_EQ(plan.TotalTokens(), 258);
}

TEST(BatchPolicyTest, OldestAdmissionFirstAndSmallTailsFillTheBudget) {
  const std::vector<SlotView> slots = {
      Prefilling(0, 500, 9), Prefilling(1, 500, 3), Prefilling(2, 40, 11)};
  const BatchPlan plan =
      PlanStep(slots, {.step_token_budget = 300, .prefill_chunk = 256});
  // Slot 1 (order 3) first; slot 0 does not fit; slot 2's 40 tokens do.
  EXPECT_EQ(plan.prefill_chunks,
            (std::vector<PrefillChunk>{{1, 256}, {2, 40}}));
}

TEST(BatchPolicyTest, PrefillAlwaysProgresses) {
  std::vector<SlotView> slots;
  for (int i = 0; i < 8; ++i) slots.push_back(Decoding(i));
  slots.push_back(Prefilling(8, 1000, 0));
  const BatchPlan plan =
      PlanStep(slots, {.step_token_budget = 4, .prefill_chunk = 64});
  EXPECT_EQ(plan.decode_slots.size(), 8u);
  EXPECT_EQ(plan.prefill_chunks, (std::vector<PrefillChunk>{{8, 64}}));
}

TEST(BatchPolicyTest, ChunkSizesDependOnlyOnTheRequest) {
  // The same prompt is cut at the same places whatever runs beside it.
  const BatchPolicyOptions options{.step_token_budget = 512,
                                   .prefill_chunk = 128};
  const std::vector<SlotView> alone = {Prefilling(0, 300, 0)};
  const std::vector<SlotView> busy = {
      Decoding(1), Decoding(2), Prefilling(3, 100, 0), Prefilling(0, 300, 1)};
  const BatchPlan a = PlanStep(alone, options);
  const BatchPlan b = PlanStep(busy, options);
  ASSERT_EQ(a.prefill_chunks.size(), 1u);
  EXPECT_EQ(a.prefill_chunks[0].num_tokens, 128);
  ASSERT_EQ(b.prefill_chunks.size(), 2u);
  EXPECT_EQ(b.prefill_chunks[1], (PrefillChunk{0, 128}));
}

TEST(BatchPolicyTest, FinishedPrefillIsNotPlanned) {
  const std::vector<SlotView> slots = {Prefilling(0, 0, 0)};
  EXPECT_TRUE(PlanStep(slots, {}).empty());
}

}  // namespace
}  // namespace tvq::scheduler
