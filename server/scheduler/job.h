// A job is what one admitted request asks of the loop: one of the kinds in
// the variant below. The scheduler holds no kind branches; it calls these
// operations through std::visit, so the compiler lists what a new kind must
// provide. Every alternative has:
//   static constexpr RequestKind kKind;
//   request_id(), deadline(), start_from(), keep()    the request's fields
//   tokens()          the tokens to prefill (all of them, in order)
//   generated()       tokens sampled so far
//   pending_token()   last sampled token not fed (-1 if none): kept with the
//                     state when the request keeps it
//   decode_input()    the token the next decode step feeds
//   Start(context)                          at admission
//   PrefillRows(last_chunk)                 logprob rows a chunk needs
//   AfterPrefill(context, rows, first, n, last_chunk) -> StatusOr<SlotState>
//   AfterDecode(context, row)                         -> StatusOr<SlotState>
//   CutShort(context)   ends early at a drain timeout (reports its outcome)
//   Fail(status)        tells the sink (the scheduler reports the outcome)
// A returned kFinished means the job ended successfully and has told its
// sink; kPrefilling / kDecoding say where it goes on. An error fails it.
//
// Adding a kind (AppendJob, "append tokens to a state" = prefill without
// sampling, is the smallest example): a class with these operations, one entry in the variant, one
// in request_kind.h (its metric label), and a Submit function in Scheduler.
#ifndef TVQ_SERVER_SCHEDULER_JOB_H_
#define TVQ_SERVER_SCHEDULER_JOB_H_

#include <variant>

#include "server/scheduler/append_job.h"
#include "server/scheduler/generation_job.h"
#include "server/scheduler/score_job.h"

namespace tvq::scheduler {

using Job = std::variant<GenerationJob, ScoreJob, AppendJob>;

constexpr RequestKind KindOf(const Job& job) {
  return std::visit(
      [](const auto& alternative) {
        return std::decay_t<decltype(alternative)>::kKind;
      },
      job);
}

}  // namespace tvq::scheduler

#endif  // TVQ_SERVER_SCHEDULER_JOB_H_
