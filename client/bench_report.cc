#include "client/bench_report.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/client_status.h"
#include "client/latency_summary.h"

namespace tvq::client {
namespace {

bool IsFailure(const StreamRecord& stream) {
  if (stream.code == grpc::StatusCode::OK) return false;
  if (stream.code == grpc::StatusCode::CANCELLED && stream.cancel_requested) {
    return false;
  }
  return !(stream.code == grpc::StatusCode::DEADLINE_EXCEEDED &&
           stream.short_deadline);
}

nlohmann::ordered_json SummaryToJson(const LatencySummary& summary) {
  return {{"count", summary.count}, {"mean", summary.mean},
          {"p50", summary.p50},     {"p90", summary.p90},
          {"p99", summary.p99},     {"max", summary.max}};
}

std::string LatencyRow(const std::string& label,
                       const nlohmann::ordered_json& row) {
  return absl::StrFormat(
      "  %-22s %7d %9.2f %9.2f %9.2f %9.2f %9.2f\n", label,
      row["count"].get<int64_t>(), row["mean"].get<double>() * 1e3,
      row["p50"].get<double>() * 1e3, row["p90"].get<double>() * 1e3,
      row["p99"].get<double>() * 1e3, row["max"].get<double>() * 1e3);
}

}  // namespace

nlohmann::ordered_json BenchReportToJson(const LoadConfig& config, int channels,
                                         const LoadResult& result) {
  std::map<std::string, int64_t> status_counts;
  int64_t ok = 0;
  int64_t cancelled_by_client = 0;
  int64_t failed = 0;
  int64_t cancel_requested = 0;
  int64_t slow_readers = 0;
  int64_t short_deadlines = 0;
  int64_t short_deadlines_expired = 0;
  int64_t tokens = 0;
  std::vector<double> first_token;
  std::vector<double> inter_token;
  std::vector<double> request_latency;
  for (const StreamRecord& stream : result.streams) {
    ++status_counts[StatusCodeName(stream.code)];
    tokens += stream.tokens;
    if (stream.cancel_requested) ++cancel_requested;
    if (stream.slow_reader) ++slow_readers;
    if (stream.short_deadline) ++short_deadlines;
    if (stream.code == grpc::StatusCode::OK) {
      ++ok;
      request_latency.push_back(stream.end_seconds - stream.arrival_seconds);
    } else if (IsFailure(stream)) {
      ++failed;
    } else if (stream.code == grpc::StatusCode::CANCELLED) {
      ++cancelled_by_client;
    } else {
      ++short_deadlines_expired;
    }
    if (stream.first_token_seconds >= 0) {
      first_token.push_back(stream.first_token_seconds -
                            stream.arrival_seconds);
    }
    inter_token.insert(inter_token.end(), stream.inter_token_seconds.begin(),
                       stream.inter_token_seconds.end());
  }
  const double elapsed = result.elapsed_seconds;
  const auto per_second = [elapsed](double count) {
    return elapsed > 0 ? count / elapsed : 0.0;
  };
  nlohmann::ordered_json config_json = {
      {"concurrency", config.concurrency},
      {"requests", config.requests},
      {"duration_seconds", config.duration_seconds},
      {"prompt_tokens", config.prompt_tokens},
      {"max_new_tokens", config.max_new_tokens},
      {"cancel_fraction", config.cancel_fraction},
      {"rate", config.rate},
      {"seed", config.seed},
      {"ignore_eos", config.ignore_eos},
      {"temperature", nullptr},
      {"timeout_seconds", config.timeout_seconds},
      {"channels", channels},
      {"slow_reader_fraction", config.slow_reader_fraction},
      {"slow_read_delay_seconds", config.slow_read_delay_seconds},
      {"short_deadline_fraction", config.short_deadline_fraction},
      {"short_deadline_seconds", config.short_deadline_seconds},
  };
  if (config.temperature.has_value()) {
    config_json["temperature"] = *config.temperature;
  }
  return {
      {"config", std::move(config_json)},
      {"elapsed_seconds", elapsed},
      {"streams",
       {{"started", static_cast<int64_t>(result.streams.size())},
        {"ok", ok},
        {"cancel_requested", cancel_requested},
        {"cancelled_by_client", cancelled_by_client},
        {"failed", failed},
        {"slow_readers", slow_readers},
        {"short_deadlines", short_deadlines},
        {"short_deadlines_expired", short_deadlines_expired},
        {"peak_in_flight", result.peak_in_flight}}},
      {"status_counts", status_counts},
      {"requests_per_second", per_second(static_cast<double>(ok))},
      {"generated_tokens", tokens},
      {"generated_tokens_per_second", per_second(static_cast<double>(tokens))},
      {"time_to_first_token_seconds",
       SummaryToJson(Summarize(std::move(first_token)))},
      {"inter_token_latency_seconds",
       SummaryToJson(Summarize(std::move(inter_token)))},
      {"request_latency_seconds",
       SummaryToJson(Summarize(std::move(request_latency)))},
  };
}

std::string FormatBenchReport(const nlohmann::ordered_json& report) {
  const nlohmann::ordered_json& streams = report["streams"];
  std::string out = absl::StrFormat(
      "streams: %d in %.2f s (peak %d open, %d cancels sent): %d ok, %d "
      "cancelled by the client, %d failed\n",
      streams["started"].get<int64_t>(),
      report["elapsed_seconds"].get<double>(),
      streams["peak_in_flight"].get<int64_t>(),
      streams["cancel_requested"].get<int64_t>(), streams["ok"].get<int64_t>(),
      streams["cancelled_by_client"].get<int64_t>(),
      streams["failed"].get<int64_t>());
  if (streams["slow_readers"].get<int64_t>() > 0 ||
      streams["short_deadlines"].get<int64_t>() > 0) {
    absl::StrAppendFormat(
        &out, "  %d slow readers; %d short deadlines, %d of them expired\n",
        streams["slow_readers"].get<int64_t>(),
        streams["short_deadlines"].get<int64_t>(),
        streams["short_deadlines_expired"].get<int64_t>());
  }
  absl::StrAppendFormat(
      &out,
      "throughput: %.2f requests/s, %.1f generated tokens/s (%d tokens)\n",
      report["requests_per_second"].get<double>(),
      report["generated_tokens_per_second"].get<double>(),
      report["generated_tokens"].get<int64_t>());
  absl::StrAppendFormat(&out, "  %-22s %7s %9s %9s %9s %9s %9s\n",
                        "latency (ms)", "count", "mean", "p50", "p90", "p99",
                        "max");
  out +=
      LatencyRow("time to first token", report["time_to_first_token_seconds"]);
  out += LatencyRow("inter-token", report["inter_token_latency_seconds"]);
  out += LatencyRow("request (ok streams)", report["request_latency_seconds"]);
  std::vector<std::string> counts;
  for (const auto& [code, count] : report["status_counts"].items()) {
    counts.push_back(absl::StrCat(code, " ", count.get<int64_t>()));
  }
  absl::StrAppend(&out, "status: ", absl::StrJoin(counts, ", "), "\n");
  return out;
}

absl::Status BenchOutcome(const LoadResult& result) {
  std::map<grpc::StatusCode, int64_t> failures;
  for (const StreamRecord& stream : result.streams) {
    if (IsFailure(stream)) ++failures[stream.code];
  }
  if (failures.empty()) return absl::OkStatus();
  grpc::StatusCode most_frequent = failures.begin()->first;
  int64_t total = 0;
  std::vector<std::string> parts;
  for (const auto& [code, count] : failures) {
    total += count;
    if (count > failures[most_frequent]) most_frequent = code;
    parts.push_back(absl::StrCat(StatusCodeName(code), " ", count));
  }
  return absl::Status(
      static_cast<absl::StatusCode>(most_frequent),
      absl::StrCat(total, " of ", result.streams.size(), " streams failed (",
                   absl::StrJoin(parts, ", "),
                   "); CANCELLED streams the bench cancelled are not "
                   "failures"));
}

}  // namespace tvq::client
