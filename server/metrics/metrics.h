// tvq-server's Prometheus metrics: one registry holding every tvq_ counter,
// histogram and info gauge, plus the collectors read at scrape time (engine
// gauges, process metrics). docs/metrics.md lists every metric.
//
// The instruments are updated by SchedulerMetricsObserver (scheduler events)
// and through RpcMetrics (one call per finished RPC, from the gRPC service)
// and HttpMetrics (one call per HTTP response). Every request-level family
// carries the label `frontend` ("grpc", "http": the request's
// scheduler::Frontend), so each request is counted once, in one series;
// engine-level families (steps, batch sizes, engine errors) have none.
// Every method is thread-safe. No prometheus-cpp exception leaves this class:
// the ones that can happen (at registration) become a Status.
#ifndef TVQ_SERVER_METRICS_METRICS_H_
#define TVQ_SERVER_METRICS_METRICS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/engine_collector.h"
#include "server/metrics/session_collector.h"
#include "server/metrics/process_collector.h"
#include "server/metrics/rpc_metrics.h"
#include "server/scheduler/frontend.h"
#include "server/scheduler/scheduler_observer.h"

namespace tvq::metrics {

// Histogram buckets. Latencies: 100 µs to 10 minutes, roughly 1-2.5-5 per
// decade, so that both one decode step on a GPU and a long generation land
// in a finite bucket.
const std::vector<double>& LatencyBucketsSeconds();
// Tokens per request: powers of two up to 2^20 (the state is constant-size,
// so prompts may be long).
const std::vector<double>& TokenCountBuckets();
// Sequences per decode step: powers of two up to 1024.
const std::vector<double>& BatchSizeBuckets();

// The "tvq_build_info" labels.
struct BuildInfo {
  std::string version;
  // "cpu" or "cuda".
  std::string backend;
  // The device in words, e.g. "cpu (2 threads)".
  std::string device;
};

// The "tvq_model_info" labels.
struct ModelInfo {
  // Short name (the model directory's base name) and the directory.
  std::string name;
  std::string path;
  // "F32", "BF16", "F16" or "mixed".
  std::string weights_dtype;
  // "byte" or "sentencepiece".
  std::string tokenizer;
  int64_t num_parameters = 0;
  int n_vocab = 0;
  int d_model = 0;
  int n_layer = 0;
  int n_head = 0;
  int n_code = 0;
  int block_len = 0;
  int mem_len = 0;
};

// "generate", "score": the names table in scheduler/request_kind.h.
using scheduler::RequestKindName;
using scheduler::Frontend;

// The gRPC name of a status code ("OK", "INVALID_ARGUMENT", ...); "UNKNOWN"
// outside 0..16.
std::string GrpcCodeName(int code);

class ServerMetrics final : public RpcMetrics {
 public:
  // Registers every family. Fails only if prometheus-cpp refuses a name.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create();

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;
  ~ServerMetrics() override;

  // Info gauges (value 1); a second call replaces the labels.
  absl::Status SetBuildInfo(const BuildInfo& info);
  absl::Status SetModelInfo(const ModelInfo& info);
  // Where the engine gauges come from (see EngineCollector::SetSource); an
  // empty function removes them. Clear it before what it reads is destroyed.
  void SetEngineSource(EngineSnapshotSource source);
  // Where the session families come from (SessionCollector::SetSource); same
  // rules.
  void SetSessionSource(SessionSnapshotSource source);

  // What an exposer must serve: the registry and the collectors. They live
  // as long as this object.
  std::vector<std::weak_ptr<prometheus::Collectable>> Collectables() const;
  // Everything in the Prometheus text format, as a scrape returns it.
  std::string SerializeText() const;

  // RpcMetrics: tvq_requests_total{frontend="grpc", method, code}.
  void OnRpcFinished(std::string_view method, int code) override;
  // tvq_requests_total{frontend, method, code}: one request of any front
  // end ended; `code` is a gRPC code name ("OK", "INVALID_ARGUMENT", ...).
  void CountRequest(Frontend frontend, std::string_view method,
                    std::string_view code);

  // ---- instruments (thread-safe; see docs/metrics.md for their meaning)
  // tvq_requests_finished_total{frontend, kind, reason}
  void CountFinished(scheduler::RequestKind kind, Frontend frontend,
                     std::string_view reason);
  // tvq_requests_rejected_total{frontend, kind, code}
  void CountRejected(scheduler::RequestKind kind, Frontend frontend,
                     int code);
  // tvq_engine_errors_total{phase}
  prometheus::Counter& engine_errors(scheduler::StepPhase phase) {
    return *engine_errors_[PhaseIndex(phase)];
  }
  // The {frontend} series.
  prometheus::Counter& prompt_tokens(Frontend frontend) {
    return *ForFrontend(frontend).prompt_tokens;
  }
  prometheus::Counter& generated_tokens(Frontend frontend) {
    return *ForFrontend(frontend).generated_tokens;
  }
  prometheus::Histogram& time_to_first_token(Frontend frontend) {
    return *ForFrontend(frontend).time_to_first_token;
  }
  prometheus::Histogram& inter_token_latency(Frontend frontend) {
    return *ForFrontend(frontend).inter_token_latency;
  }
  prometheus::Histogram& decode_duration(Frontend frontend) {
    return *ForFrontend(frontend).decode_duration;
  }
  prometheus::Histogram& request_generated_tokens(Frontend frontend) {
    return *ForFrontend(frontend).request_generated_tokens;
  }
  // The {frontend, kind} series.
  prometheus::Histogram& request_duration(scheduler::RequestKind kind,
                                          Frontend frontend) {
    return *ForKind(kind, frontend).request_duration;
  }
  prometheus::Histogram& queue_wait(scheduler::RequestKind kind,
                                    Frontend frontend) {
    return *ForKind(kind, frontend).queue_wait;
  }
  prometheus::Histogram& prefill_duration(scheduler::RequestKind kind,
                                          Frontend frontend) {
    return *ForKind(kind, frontend).prefill_duration;
  }
  prometheus::Histogram& request_prompt_tokens(scheduler::RequestKind kind,
                                               Frontend frontend) {
    return *ForKind(kind, frontend).request_prompt_tokens;
  }
  prometheus::Histogram& batch_size() { return *batch_size_; }
  prometheus::Histogram& step_duration(scheduler::StepPhase phase) {
    return *step_duration_[PhaseIndex(phase)];
  }

 private:
  using CounterFamily = prometheus::Family<prometheus::Counter>;
  using GaugeFamily = prometheus::Family<prometheus::Gauge>;
  using HistogramFamily = prometheus::Family<prometheus::Histogram>;
  // The series labelled {frontend=...} of one front end.
  struct FrontendInstruments {
    prometheus::Counter* prompt_tokens = nullptr;
    prometheus::Counter* generated_tokens = nullptr;
    prometheus::Histogram* time_to_first_token = nullptr;
    prometheus::Histogram* inter_token_latency = nullptr;
    prometheus::Histogram* decode_duration = nullptr;
    prometheus::Histogram* request_generated_tokens = nullptr;
  };
  // The series labelled {frontend=..., kind=...}.
  struct KindInstruments {
    prometheus::Histogram* request_duration = nullptr;
    prometheus::Histogram* queue_wait = nullptr;
    prometheus::Histogram* prefill_duration = nullptr;
    prometheus::Histogram* request_prompt_tokens = nullptr;
  };
  template <typename T>
  using PerPhase = std::array<T*, 2>;

  ServerMetrics();
  // Builds the families and the children known in advance; throws what
  // prometheus-cpp throws (Create catches).
  void Register();
  // Every kind of scheduler::kRequestKinds and every front end of
  // scheduler::kFrontends has its entry (Register).
  const KindInstruments& ForKind(scheduler::RequestKind kind,
                                 Frontend frontend) const {
    return per_kind_.find({kind, frontend})->second;
  }
  const FrontendInstruments& ForFrontend(Frontend frontend) const {
    return per_frontend_[frontend == Frontend::kHttp ? 1 : 0];
  }
  static size_t PhaseIndex(scheduler::StepPhase phase) {
    return phase == scheduler::StepPhase::kPrefill ? 0 : 1;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<EngineCollector> engine_collector_;
  std::shared_ptr<SessionCollector> session_collector_;
  std::shared_ptr<ProcessCollector> process_collector_;

  CounterFamily* requests_ = nullptr;
  CounterFamily* requests_finished_ = nullptr;
  CounterFamily* requests_rejected_ = nullptr;
  PerPhase<prometheus::Counter> engine_errors_{};
  // Indexed grpc, http.
  std::array<FrontendInstruments, 2> per_frontend_{};
  // One entry per (request kind, front end), made from the tables at
  // registration.
  absl::flat_hash_map<std::pair<scheduler::RequestKind, Frontend>,
                      KindInstruments>
      per_kind_;
  prometheus::Histogram* batch_size_ = nullptr;
  PerPhase<prometheus::Histogram> step_duration_{};

  absl::Mutex info_mutex_;
  GaugeFamily* build_info_ = nullptr;
  GaugeFamily* model_info_ = nullptr;
  prometheus::Gauge* build_info_gauge_ ABSL_GUARDED_BY(info_mutex_) = nullptr;
  prometheus::Gauge* model_info_gauge_ ABSL_GUARDED_BY(info_mutex_) = nullptr;
};

}  // namespace tvq::metrics

#endif  // TVQ_SERVER_METRICS_METRICS_H_
