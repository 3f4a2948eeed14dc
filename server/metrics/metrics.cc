#include "server/metrics/metrics.h"

#include <exception>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace tvq::metrics {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using scheduler::FrontendName;
using scheduler::kFrontends;
using scheduler::RequestKind;
using scheduler::StepPhase;

size_t FrontendIndex(Frontend frontend) {
  return frontend == Frontend::kHttp ? 1 : 0;
}

std::string FrontendLabel(Frontend frontend) {
  return std::string(FrontendName(frontend));
}

constexpr std::array<StepPhase, 2> kPhases = {StepPhase::kPrefill,
                                              StepPhase::kDecode};

// The tvq.v1.TextGeneration methods, pre-created with code="OK" so that
// rate() sees them from the first scrape.
constexpr std::array<std::string_view, 6> kMethods = {
    "Generate", "GenerateStream", "Score",
    "Tokenize", "Detokenize",     "GetModelInfo"};
// The HTTP routes that run the model, pre-created the same way.
constexpr std::array<std::string_view, 3> kHttpRoutes = {
    "/v1/completions", "/v1/chat/completions", "/v1/responses"};

// Reasons a request can end with (docs/metrics.md): kinds that sample
// tokens end with a finish reason, the others "complete".
constexpr std::array<std::string_view, 7> kSamplingReasons = {
    "length",    "stop_sequence", "eos",  "stop_token",
    "cancelled", "deadline",      "error"};
constexpr std::array<std::string_view, 4> kNonSamplingReasons = {
    "complete", "cancelled", "deadline", "error"};

std::span<const std::string_view> FinishedReasons(RequestKind kind) {
  if (scheduler::SamplesTokens(kind)) return kSamplingReasons;
  return kNonSamplingReasons;
}

std::vector<double> PowersOfTwo(int max_exponent) {
  std::vector<double> bounds;
  for (int exponent = 0; exponent <= max_exponent; ++exponent) {
    bounds.push_back(static_cast<double>(int64_t{1} << exponent));
  }
  return bounds;
}

}  // namespace

const std::vector<double>& LatencyBucketsSeconds() {
  static const std::vector<double>* const kBuckets = new std::vector<double>{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
      5,      10,      25,     60,    120,    300,   600};
  return *kBuckets;
}

const std::vector<double>& TokenCountBuckets() {
  static const std::vector<double>* const kBuckets =
      new std::vector<double>(PowersOfTwo(20));
  return *kBuckets;
}

const std::vector<double>& BatchSizeBuckets() {
  static const std::vector<double>* const kBuckets =
      new std::vector<double>(PowersOfTwo(10));
  return *kBuckets;
}

std::string GrpcCodeName(int code) {
  if (code < 0 || code > 16) return "UNKNOWN";
  // absl::StatusCode uses gRPC's numbering and names.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create() {
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics());
  try {
    metrics->Register();
  } catch (const std::exception& error) {
    return absl::InternalError(
        absl::StrCat("registering the Prometheus metrics: ", error.what()));
  }
  return metrics;
}

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      engine_collector_(std::make_shared<EngineCollector>()),
      session_collector_(std::make_shared<SessionCollector>()),
      process_collector_(std::make_shared<ProcessCollector>()) {}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::Register() {
  prometheus::Registry& registry = *registry_;

  // ---- requests
  requests_ = &BuildCounter()
                   .Name("tvq_requests_total")
                   .Help(
                       "Requests that ended, by front end (grpc: RPCs of "
                       "tvq.v1.TextGeneration; http: responses of the "
                       "OpenAI-compatible API), method (RPC or route) and "
                       "gRPC status code name (HTTP statuses mapped as "
                       "docs/metrics.md says).")
                   .Register(registry);
  for (std::string_view method : kMethods) {
    requests_->Add({{"frontend", "grpc"},
                    {"method", std::string(method)},
                    {"code", "OK"}});
  }
  for (std::string_view route : kHttpRoutes) {
    requests_->Add({{"frontend", "http"},
                    {"method", std::string(route)},
                    {"code", "OK"}});
  }
  requests_finished_ =
      &BuildCounter()
           .Name("tvq_requests_finished_total")
           .Help(
               "Requests the scheduler accepted and that ended, by kind "
               "(generate, score) and reason.")
           .Register(registry);
  for (Frontend frontend : kFrontends) {
    for (const scheduler::RequestKindInfo& kind : scheduler::kRequestKinds) {
      for (std::string_view reason : FinishedReasons(kind.kind)) {
        requests_finished_->Add({{"frontend", FrontendLabel(frontend)},
                                 {"kind", std::string(kind.name)},
                                 {"reason", std::string(reason)}});
      }
    }
  }
  requests_rejected_ =
      &BuildCounter()
           .Name("tvq_requests_rejected_total")
           .Help(
               "Requests refused at admission without running, by kind and "
               "gRPC status code (RESOURCE_EXHAUSTED: queue full; "
               "UNAVAILABLE: shutting down).")
           .Register(registry);
  for (Frontend frontend : kFrontends) {
    for (const scheduler::RequestKindInfo& kind : scheduler::kRequestKinds) {
      for (const char* code : {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}) {
        requests_rejected_->Add({{"frontend", FrontendLabel(frontend)},
                                 {"kind", std::string(kind.name)},
                                 {"code", code}});
      }
    }
  }

  // ---- latency
  auto latency = [&](const char* name, const char* help) {
    return &BuildHistogram().Name(name).Help(help).Register(registry);
  };
  HistogramFamily* ttft = latency(
      "tvq_time_to_first_token_seconds",
      "Seconds from a generation's arrival (queue wait included) to its "
      "first token.");
  HistogramFamily* itl =
      latency("tvq_inter_token_latency_seconds",
              "Seconds between two consecutive tokens of one generation.");
  HistogramFamily* decode =
      latency("tvq_decode_duration_seconds",
              "Seconds from a generation's first token to its end.");
  HistogramFamily* duration = latency(
      "tvq_request_duration_seconds",
      "Seconds from a request's arrival to its end, whatever the outcome.");
  HistogramFamily* queue = latency(
      "tvq_queue_wait_seconds",
      "Seconds a request waited in the admission queue for a state slot.");
  HistogramFamily* prefill = latency(
      "tvq_prefill_duration_seconds",
      "Seconds from admission to the end of the prompt's prefill (the first "
      "token of a generation, the result of a score).");
  for (Frontend frontend : kFrontends) {
    for (const scheduler::RequestKindInfo& kind : scheduler::kRequestKinds) {
      const prometheus::Labels labels = {{"frontend", FrontendLabel(frontend)},
                                         {"kind", std::string(kind.name)}};
      KindInstruments& instruments = per_kind_[{kind.kind, frontend}];
      instruments.request_duration =
          &duration->Add(labels, LatencyBucketsSeconds());
      instruments.queue_wait = &queue->Add(labels, LatencyBucketsSeconds());
      instruments.prefill_duration =
          &prefill->Add(labels, LatencyBucketsSeconds());
    }
  }

  // ---- tokens
  CounterFamily* prompt_tokens =
      &BuildCounter()
           .Name("tvq_prompt_tokens_total")
           .Help(
               "Prompt tokens fed to the model (prefill), scored sequences "
               "included.")
           .Register(registry);
  CounterFamily* generated_tokens = &BuildCounter()
                                         .Name("tvq_generated_tokens_total")
                                         .Help("Tokens generated (sampled).")
                                         .Register(registry);
  HistogramFamily* prompt_per_request =
      &BuildHistogram()
           .Name("tvq_request_prompt_tokens")
           .Help("Prompt tokens per request (the scored sequence for scores).")
           .Register(registry);
  HistogramFamily* generated_per_request =
      &BuildHistogram()
           .Name("tvq_request_generated_tokens")
           .Help("Tokens generated per generation request.")
           .Register(registry);
  for (Frontend frontend : kFrontends) {
    const prometheus::Labels labels = {{"frontend", FrontendLabel(frontend)}};
    FrontendInstruments& instruments = per_frontend_[FrontendIndex(frontend)];
    instruments.prompt_tokens = &prompt_tokens->Add(labels);
    instruments.generated_tokens = &generated_tokens->Add(labels);
    instruments.time_to_first_token =
        &ttft->Add(labels, LatencyBucketsSeconds());
    instruments.inter_token_latency =
        &itl->Add(labels, LatencyBucketsSeconds());
    instruments.decode_duration = &decode->Add(labels, LatencyBucketsSeconds());
    instruments.request_generated_tokens =
        &generated_per_request->Add(labels, TokenCountBuckets());
    for (const scheduler::RequestKindInfo& kind : scheduler::kRequestKinds) {
      per_kind_[{kind.kind, frontend}].request_prompt_tokens =
          &prompt_per_request->Add({{"frontend", FrontendLabel(frontend)},
                                    {"kind", std::string(kind.name)}},
                                   TokenCountBuckets());
    }
  }

  // ---- engine
  batch_size_ = &BuildHistogram()
                     .Name("tvq_batch_size")
                     .Help("Sequences in each batched decode step.")
                     .Register(registry)
                     .Add({}, BatchSizeBuckets());
  HistogramFamily* step = latency(
      "tvq_step_duration_seconds",
      "Seconds of one engine call: a batched decode step, or one prefill "
      "chunk.");
  CounterFamily* errors =
      &BuildCounter()
           .Name("tvq_engine_errors_total")
           .Help(
               "Engine calls that failed (their requests failed with "
               "INTERNAL), by phase.")
           .Register(registry);
  for (StepPhase phase : kPhases) {
    const prometheus::Labels labels = {
        {"phase", std::string(scheduler::StepPhaseName(phase))}};
    step_duration_[PhaseIndex(phase)] =
        &step->Add(labels, LatencyBucketsSeconds());
    engine_errors_[PhaseIndex(phase)] = &errors->Add(labels);
  }

  // ---- info
  build_info_ = &BuildGauge()
                     .Name("tvq_build_info")
                     .Help(
                         "Always 1; the labels describe the server build "
                         "and the backend it runs on.")
                     .Register(registry);
  model_info_ = &BuildGauge()
                     .Name("tvq_model_info")
                     .Help("Always 1; the labels describe the loaded model.")
                     .Register(registry);
}

absl::Status ServerMetrics::SetBuildInfo(const BuildInfo& info) {
  absl::MutexLock lock(&info_mutex_);
  try {
    if (build_info_gauge_ != nullptr) build_info_->Remove(build_info_gauge_);
    build_info_gauge_ = &build_info_->Add({{"version", info.version},
                                           {"backend", info.backend},
                                           {"device", info.device}});
    build_info_gauge_->Set(1);
  } catch (const std::exception& error) {
    build_info_gauge_ = nullptr;
    return absl::InternalError(
        absl::StrCat("setting tvq_build_info: ", error.what()));
  }
  return absl::OkStatus();
}

absl::Status ServerMetrics::SetModelInfo(const ModelInfo& info) {
  absl::MutexLock lock(&info_mutex_);
  try {
    if (model_info_gauge_ != nullptr) model_info_->Remove(model_info_gauge_);
    model_info_gauge_ = &model_info_->Add({
        {"model", info.name},
        {"path", info.path},
        {"weights_dtype", info.weights_dtype},
        {"tokenizer", info.tokenizer},
        {"parameters", absl::StrCat(info.num_parameters)},
        {"n_vocab", absl::StrCat(info.n_vocab)},
        {"d_model", absl::StrCat(info.d_model)},
        {"n_layer", absl::StrCat(info.n_layer)},
        {"n_head", absl::StrCat(info.n_head)},
        {"n_code", absl::StrCat(info.n_code)},
        {"block_len", absl::StrCat(info.block_len)},
        {"mem_len", absl::StrCat(info.mem_len)},
    });
    model_info_gauge_->Set(1);
  } catch (const std::exception& error) {
    model_info_gauge_ = nullptr;
    return absl::InternalError(
        absl::StrCat("setting tvq_model_info: ", error.what()));
  }
  return absl::OkStatus();
}

void ServerMetrics::SetEngineSource(EngineSnapshotSource source) {
  engine_collector_->SetSource(std::move(source));
}

void ServerMetrics::SetSessionSource(SessionSnapshotSource source) {
  session_collector_->SetSource(std::move(source));
}

std::vector<std::weak_ptr<prometheus::Collectable>>
ServerMetrics::Collectables() const {
  return {registry_, engine_collector_, session_collector_, process_collector_};
}

std::string ServerMetrics::SerializeText() const {
  std::vector<prometheus::MetricFamily> families;
  for (const std::weak_ptr<prometheus::Collectable>& weak : Collectables()) {
    const std::shared_ptr<prometheus::Collectable> collectable = weak.lock();
    if (collectable == nullptr) continue;
    std::vector<prometheus::MetricFamily> collected = collectable->Collect();
    families.insert(families.end(), std::make_move_iterator(collected.begin()),
                    std::make_move_iterator(collected.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void ServerMetrics::OnRpcFinished(std::string_view method, int code) {
  CountRequest(Frontend::kGrpc, method, GrpcCodeName(code));
}

void ServerMetrics::CountRequest(Frontend frontend, std::string_view method,
                                 std::string_view code) {
  try {
    requests_
        ->Add({{"frontend", FrontendLabel(frontend)},
               {"method", std::string(method)},
               {"code", std::string(code)}})
        .Increment();
  } catch (const std::exception&) {
    // Label values cannot be refused; nothing else throws here.
  }
}

void ServerMetrics::CountFinished(RequestKind kind, Frontend frontend,
                                  std::string_view reason) {
  try {
    requests_finished_
        ->Add({{"frontend", FrontendLabel(frontend)},
               {"kind", std::string(RequestKindName(kind))},
               {"reason", std::string(reason)}})
        .Increment();
  } catch (const std::exception&) {
  }
}

void ServerMetrics::CountRejected(RequestKind kind, Frontend frontend,
                                  int code) {
  try {
    requests_rejected_
        ->Add({{"frontend", FrontendLabel(frontend)},
               {"kind", std::string(RequestKindName(kind))},
               {"code", GrpcCodeName(code)}})
        .Increment();
  } catch (const std::exception&) {
  }
}

}  // namespace tvq::metrics
