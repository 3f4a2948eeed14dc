#include "client/load_generator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_callback.h"

namespace tvq::client {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// A well-mixed 64-bit value from (seed, index, stream of randomness), so
// that every request's choices are reproducible on their own.
uint64_t Mix(uint64_t seed, uint64_t index, uint64_t purpose) {
  std::seed_seq sequence{
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
      static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
      static_cast<uint32_t>(purpose)};
  std::mt19937_64 generator(sequence);
  return generator();
}

}  // namespace

// One GenerateStream call. Reactions run on gRPC's callback threads; one
// read is outstanding at a time, so the record needs no lock. Deletes
// itself after reporting.
class LoadGenerator::Stream final
    : public grpc::ClientReadReactor<v1::GenerateStreamResponse> {
 public:
  // read_delay_seconds > 0: a slow reader, waiting that long before each
  // next read.
  Stream(LoadGenerator& owner, v1::GenerateRequest request,
         int64_t cancel_after_tokens, double read_delay_seconds,
         Clock::time_point run_start, Clock::time_point arrival)
      : owner_(owner),
        request_(std::move(request)),
        cancel_after_tokens_(cancel_after_tokens),
        read_delay_seconds_(read_delay_seconds),
        run_start_(run_start) {
    record_.arrival_seconds = SecondsBetween(run_start_, arrival);
    record_.slow_reader = read_delay_seconds_ > 0;
    record_.inter_token_seconds.reserve(
        static_cast<size_t>(std::max(0, request_.max_new_tokens())));
  }

  void set_short_deadline(bool value) { record_.short_deadline = value; }

  void Start(v1::TextGeneration::Stub& stub, double timeout_seconds) {
    if (timeout_seconds > 0) {
      context_.set_deadline(
          std::chrono::system_clock::now() +
          std::chrono::duration_cast<std::chrono::system_clock::duration>(
              std::chrono::duration<double>(timeout_seconds)));
    }
    stub.async()->GenerateStream(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream ended; OnDone follows.
    const int tokens = response_.token_ids_size();
    if (tokens > 0) {
      const Clock::time_point now = Clock::now();
      if (record_.tokens == 0) {
        record_.first_token_seconds = SecondsBetween(run_start_, now);
      } else {
        const double gap = SecondsBetween(last_token_time_, now) / tokens;
        record_.inter_token_seconds.insert(record_.inter_token_seconds.end(),
                                           tokens, gap);
      }
      record_.tokens += tokens;
      last_token_time_ = now;
    }
    if (cancel_after_tokens_ > 0 && !record_.cancel_requested &&
        record_.tokens >= cancel_after_tokens_) {
      record_.cancel_requested = true;
      context_.TryCancel();
    }
    if (read_delay_seconds_ <= 0) {
      StartRead(&response_);
      return;
    }
    // A slow reader: the next read starts from the alarm's thread, outside
    // any reaction, so a hold keeps OnDone (and `delete this`) from running
    // before it has started.
    AddHold();
    read_alarm_.Set(
        std::chrono::system_clock::now() +
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::chrono::duration<double>(read_delay_seconds_)),
        [this](bool) {
          StartRead(&response_);
          RemoveHold();
        });
  }

  void OnDone(const grpc::Status& status) override {
    record_.code = status.error_code();
    record_.end_seconds = SecondsBetween(run_start_, Clock::now());
    owner_.OnStreamDone(std::move(record_));
    delete this;
  }

 private:
  LoadGenerator& owner_;
  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateStreamResponse response_;
  const int64_t cancel_after_tokens_;
  const double read_delay_seconds_;
  const Clock::time_point run_start_;
  grpc::Alarm read_alarm_;
  Clock::time_point last_token_time_;
  StreamRecord record_;
};

absl::Status ValidateLoadConfig(const LoadConfig& config) {
  if (config.concurrency < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--concurrency must be >= 1, got ", config.concurrency));
  }
  if (config.requests < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--requests must be >= 0, got ", config.requests));
  }
  if (!(config.duration_seconds >= 0) || std::isinf(config.duration_seconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--duration must be a finite number of seconds >= 0, got ",
                     config.duration_seconds));
  }
  if (config.requests == 0 && config.duration_seconds == 0) {
    return absl::InvalidArgumentError(
        "give --requests or --duration (both are 0)");
  }
  if (config.prompt_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt-tokens must be >= 1, got ", config.prompt_tokens));
  }
  if (config.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-new-tokens must be >= 1, got ", config.max_new_tokens));
  }
  if (!(config.cancel_fraction >= 0 && config.cancel_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cancel-fraction must be in [0, 1], got ", config.cancel_fraction));
  }
  if (!(config.rate >= 0) || std::isinf(config.rate)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rate must be a finite number of requests per second >= 0, got ",
        config.rate));
  }
  if (!(config.timeout_seconds >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--timeout must be >= 0 seconds, got ", config.timeout_seconds));
  }
  if (!(config.slow_reader_fraction >= 0 && config.slow_reader_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--slow-reader-fraction must be in [0, 1], got ",
                     config.slow_reader_fraction));
  }
  if (!(config.slow_read_delay_seconds > 0 &&
        config.slow_read_delay_seconds <= 60)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--slow-read-delay must be in (0, 60] seconds, got ",
                     config.slow_read_delay_seconds));
  }
  if (!(config.short_deadline_fraction >= 0 &&
        config.short_deadline_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--short-deadline-fraction must be in [0, 1], got ",
                     config.short_deadline_fraction));
  }
  if (!(config.short_deadline_seconds > 0) ||
      std::isinf(config.short_deadline_seconds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--short-deadline must be a finite number of seconds > "
                     "0, got ",
                     config.short_deadline_seconds));
  }
  return absl::OkStatus();
}

LoadGenerator::LoadGenerator(
    LoadConfig config, PromptVocabulary vocabulary,
    std::vector<std::shared_ptr<grpc::Channel>> channels)
    : config_(std::move(config)), vocabulary_(std::move(vocabulary)) {
  for (int32_t id = 0; id < vocabulary_.n_vocab; ++id) {
    if (std::find(vocabulary_.special_ids.begin(),
                  vocabulary_.special_ids.end(),
                  id) == vocabulary_.special_ids.end()) {
      prompt_ids_.push_back(id);
    }
  }
  if (prompt_ids_.empty()) prompt_ids_.push_back(vocabulary_.eos_id);
  for (const std::shared_ptr<grpc::Channel>& channel : channels) {
    stubs_.push_back(v1::TextGeneration::NewStub(channel));
  }
}

v1::GenerateRequest LoadGenerator::MakeRequest(int64_t index) {
  v1::GenerateRequest request;
  std::mt19937_64 generator(Mix(config_.seed, index, /*purpose=*/1));
  std::uniform_int_distribution<size_t> pick(0, prompt_ids_.size() - 1);
  v1::TokenIds& ids = *request.mutable_token_ids();
  ids.mutable_ids()->Reserve(config_.prompt_tokens);
  ids.add_ids(vocabulary_.eos_id);
  for (int32_t i = 1; i < config_.prompt_tokens; ++i) {
    ids.add_ids(prompt_ids_[pick(generator)]);
  }
  request.set_no_eos_prefix(true);
  request.set_max_new_tokens(config_.max_new_tokens);
  request.set_ignore_eos(config_.ignore_eos);
  if (config_.temperature.has_value()) {
    request.set_temperature(*config_.temperature);
  }
  request.set_seed(config_.seed + static_cast<uint64_t>(index));
  request.set_request_id(absl::StrCat("bench-", index));
  return request;
}

int64_t LoadGenerator::CancelAfterTokens(int64_t index) {
  // Exactly floor(n * fraction) of the first n streams are cancelled, for
  // every n, so that short runs get their share too.
  const auto cancelled_before = [this](int64_t n) {
    return static_cast<int64_t>(
        std::floor(static_cast<double>(n) * config_.cancel_fraction));
  };
  if (cancelled_before(index + 1) == cancelled_before(index)) return 0;
  const int64_t last = std::max<int64_t>(1, config_.max_new_tokens - 1);
  std::mt19937_64 generator(Mix(config_.seed, index, /*purpose=*/2));
  return std::uniform_int_distribution<int64_t>(1, last)(generator);
}

bool LoadGenerator::Picked(int64_t index, double fraction,
                           uint64_t purpose) const {
  if (fraction <= 0) return false;
  // The top 53 bits of the mix as a uniform draw in [0, 1).
  const double draw =
      static_cast<double>(Mix(config_.seed, index, purpose) >> 11) * 0x1p-53;
  return draw < fraction;
}

void LoadGenerator::OnStreamDone(StreamRecord record) {
  absl::MutexLock lock(&mutex_);
  records_.push_back(std::move(record));
  --in_flight_;
  stream_done_.Signal();
}

LoadResult LoadGenerator::Run() {
  LoadResult result;
  const Clock::time_point start = Clock::now();
  const bool open_loop = config_.rate > 0;
  // Clock::time_point::max() stands for "no limit".
  const Clock::time_point stop_starting_at =
      config_.duration_seconds > 0
          ? start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(config_.duration_seconds))
          : Clock::time_point::max();
  std::mt19937_64 arrival_generator(Mix(config_.seed, 0, /*purpose=*/3));
  std::exponential_distribution<double> arrival_gap(open_loop ? config_.rate
                                                              : 1.0);
  Clock::time_point next_arrival = start;

  // Waits on stream_done_ until `deadline` (or a stream ends).
  const auto wait_until =
      [this](Clock::time_point deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        if (deadline == Clock::time_point::max()) {
          stream_done_.Wait(&mutex_);
          return;
        }
        const Clock::duration left = deadline - Clock::now();
        if (left > Clock::duration::zero()) {
          stream_done_.WaitWithTimeout(&mutex_, absl::FromChrono(left));
        }
      };

  int64_t started = 0;
  mutex_.Lock();
  for (;;) {
    const Clock::time_point now = Clock::now();
    if (config_.requests > 0 && started >= config_.requests) break;
    // Open loop: every arrival scheduled before the stop time starts, even
    // if late. Closed loop: nothing starts after it.
    if ((open_loop ? next_arrival : now) >= stop_starting_at) break;
    if (in_flight_ >= config_.concurrency) {
      wait_until(stop_starting_at);
      continue;
    }
    if (open_loop && now < next_arrival) {
      wait_until(std::min(next_arrival, stop_starting_at));
      continue;
    }
    const Clock::time_point arrival = open_loop ? next_arrival : now;
    if (open_loop) {
      next_arrival += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(arrival_gap(arrival_generator)));
    }
    ++in_flight_;
    result.peak_in_flight = std::max(result.peak_in_flight, in_flight_);
    const int64_t index = started++;
    const bool slow = Picked(index, config_.slow_reader_fraction,
                             /*purpose=*/4);
    const bool short_deadline = Picked(
        index, config_.short_deadline_fraction, /*purpose=*/5);
    auto* stream = new Stream(*this, MakeRequest(index),
                              CancelAfterTokens(index),
                              slow ? config_.slow_read_delay_seconds : 0,
                              start, arrival);
    stream->set_short_deadline(short_deadline);
    v1::TextGeneration::Stub& stub = *stubs_[index % stubs_.size()];
    // Unlocked: gRPC may run a reaction (OnDone, which locks) inline.
    mutex_.Unlock();
    stream->Start(stub, short_deadline ? config_.short_deadline_seconds
                                       : config_.timeout_seconds);
    mutex_.Lock();
  }
  while (in_flight_ > 0) stream_done_.Wait(&mutex_);
  result.elapsed_seconds = SecondsBetween(start, Clock::now());
  result.streams = std::move(records_);
  records_.clear();
  mutex_.Unlock();
  return result;
}

}  // namespace tvq::client
