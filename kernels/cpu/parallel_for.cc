#include "kernels/cpu/parallel_for.h"

#include <algorithm>

namespace tvq::kernels::cpu {
namespace {

// Range r of `ranges` equal parts of [0, total).
void RangeBounds(int64_t total, int ranges, int r, int64_t* begin,
                 int64_t* end) {
  *begin = total * r / ranges;
  *end = total * (r + 1) / ranges;
}

}  // namespace

ThreadPool::ThreadPool(int num_threads)
    : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::ParallelFor(
    int64_t n, int64_t min_grain,
    const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int64_t grain = std::max<int64_t>(1, min_grain);
  const int ranges =
      static_cast<int>(std::min<int64_t>(num_threads_, (n + grain - 1) / grain));
  if (ranges <= 1) {
    body(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    total_ = n;
    num_ranges_ = ranges;
    pending_ = ranges - 1;
    ++generation_;
  }
  work_ready_.notify_all();
  int64_t begin, end;
  RangeBounds(n, ranges, 0, &begin, &end);
  body(begin, end);
  std::unique_lock<std::mutex> lock(mutex_);
  work_done_.wait(lock, [this] { return pending_ == 0; });
  body_ = nullptr;
}

void ThreadPool::WorkerLoop(int worker_index) {
  int64_t seen_generation = 0;
  while (true) {
    const std::function<void(int64_t, int64_t)>* body;
    int64_t total;
    int ranges;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] {
        return stopping_ || generation_ != seen_generation;
      });
      if (stopping_) return;
      seen_generation = generation_;
      body = body_;
      total = total_;
      ranges = num_ranges_;
    }
    if (worker_index < ranges) {
      int64_t begin, end;
      RangeBounds(total, ranges, worker_index, &begin, &end);
      (*body)(begin, end);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) work_done_.notify_one();
    }
  }
}

}  // namespace tvq::kernels::cpu
