#include "server/metrics/engine_collector.h"

#include <utility>

namespace tvq::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily GaugeFamily(std::string name, std::string help) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = MetricType::Gauge;
  return family;
}

void AddGauge(MetricFamily& family, std::vector<ClientMetric::Label> labels,
              double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

}  // namespace

void EngineCollector::SetSource(EngineSnapshotSource source) {
  absl::MutexLock lock(&mutex_);
  source_ = std::move(source);
}

std::vector<MetricFamily> EngineCollector::Collect() const {
  EngineSnapshot snapshot;
  {
    // Held while the source runs: SetSource waits for a scrape in progress.
    absl::MutexLock lock(&mutex_);
    if (!source_) return {};
    snapshot = source_();
  }
  const int taken_slots = snapshot.busy_slots + snapshot.pinned_slots;
  const int free_slots = snapshot.num_slots - taken_slots;
  const double bytes = static_cast<double>(snapshot.state_bytes_per_sequence);
  std::vector<MetricFamily> families;

  MetricFamily queue = GaugeFamily(
      "tvq_queue_length",
      "Requests waiting for a state slot (Gateway API Inference Extension: "
      "TotalQueuedRequests).");
  AddGauge(queue, {}, snapshot.queued_requests);
  families.push_back(std::move(queue));

  MetricFamily running = GaugeFamily(
      "tvq_requests_running",
      "Requests holding a state slot: prefilling or decoding (Gateway API "
      "Inference Extension: TotalRunningRequests).");
  AddGauge(running, {}, snapshot.busy_slots);
  families.push_back(std::move(running));

  MetricFamily slots = GaugeFamily(
      "tvq_slots",
      "State slots by state: busy (a request runs), pinned (a pinned state) "
      "or free (a new request can start at once); they add up to "
      "tvq_slot_capacity.");
  AddGauge(slots, {{"state", "busy"}}, snapshot.busy_slots);
  AddGauge(slots, {{"state", "pinned"}}, snapshot.pinned_slots);
  AddGauge(slots, {{"state", "free"}}, free_slots);
  families.push_back(std::move(slots));

  MetricFamily capacity = GaugeFamily(
      "tvq_slot_capacity", "State slots in all (--num-slots or derived).");
  AddGauge(capacity, {}, snapshot.num_slots);
  families.push_back(std::move(capacity));

  MetricFamily utilization = GaugeFamily(
      "tvq_state_utilization_ratio",
      "Fraction of state slots a new request cannot take (busy or pinned), "
      "0..1 (the inference gateway's KV cache usage).");
  AddGauge(utilization, {},
           snapshot.num_slots > 0
               ? static_cast<double>(taken_slots) / snapshot.num_slots
               : 0.0);
  families.push_back(std::move(utilization));

  MetricFamily per_sequence = GaugeFamily(
      "tvq_state_bytes_per_sequence",
      "Bytes of decode state one sequence holds, whatever its length.");
  AddGauge(per_sequence, {}, bytes);
  families.push_back(std::move(per_sequence));

  MetricFamily state_memory = GaugeFamily(
      "tvq_state_memory_bytes",
      "Decode state memory: used by busy slots, reserved for all slots.");
  AddGauge(state_memory, {{"state", "used"}}, bytes * taken_slots);
  AddGauge(state_memory, {{"state", "reserved"}}, bytes * snapshot.num_slots);
  families.push_back(std::move(state_memory));

  if (!snapshot.device_memory.empty()) {
    MetricFamily used = GaugeFamily("tvq_gpu_memory_used_bytes",
                                    "Accelerator memory in use, in bytes.");
    MetricFamily total = GaugeFamily("tvq_gpu_memory_total_bytes",
                                     "Accelerator memory in total, in bytes.");
    for (const DeviceMemory& memory : snapshot.device_memory) {
      AddGauge(used, {{"device", memory.device}},
               static_cast<double>(memory.used_bytes));
      AddGauge(total, {{"device", memory.device}},
               static_cast<double>(memory.total_bytes));
    }
    families.push_back(std::move(used));
    families.push_back(std::move(total));
  }
  return families;
}

}  // namespace tvq::metrics
