// One /v1/completions or /v1/chat/completions request in flight: submits
// one generation per choice to the scheduler (n > 1: the prompt is
// prefilled once into a temporary session, forked once per further choice,
// and each choice generates on its own session, closed when it ends; when
// the session budget refuses, n independent generations), gathers what the
// sinks report and answers through the exchange, whole or as Server-Sent
// Events:
//
//   data: {chunk}\n\n ...           one or more per choice; the last of a
//                                   choice carries its finish_reason
//   data: {usage chunk}\n\n         with stream_options.include_usage
//   data: [DONE]\n\n
//
// The scheduler's sinks run on the scheduler thread and only post to the
// exchange's strand; everything else runs on that strand. A client that goes
// away cancels every choice at once (Scheduler::Cancel: the slots are free
// within one step). A choice that fails fails the request: the others are
// cancelled and the error is answered (unary) or sent as a last
// `data: {"error": ...}` event before [DONE] (stream).
#ifndef TVQ_SERVER_SERVICE_HTTP_COMPLETION_CALL_H_
#define TVQ_SERVER_SERVICE_HTTP_COMPLETION_CALL_H_

#include <memory>
#include <string>

#include "server/core/engine.h"
#include "server/service/http/completion_request.h"
#include "server/service/http/http_exchange.h"

namespace tvq::service::http {

// Starts the request; the exchange is answered later (or at once when the
// scheduler refuses it: 429 queue full, 503 draining; with n > 1 such a
// refusal comes once the prompt's session has been made, as a failed
// request). Call on the exchange's strand.
void StartCompletionCall(std::shared_ptr<HttpExchange> exchange,
                         core::Engine* engine, CompletionPlan plan,
                         std::string model_name);

}  // namespace tvq::service::http

#endif  // TVQ_SERVER_SERVICE_HTTP_COMPLETION_CALL_H_
