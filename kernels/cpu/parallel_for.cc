#include "kernels/cpu/parallel_for.h"

#include <algorithm>
#include <chrono>

namespace tvq::kernels::cpu {
namespace {

// How long a waiting thread spins before it blocks.
constexpr auto kSpinTime = std::chrono::microseconds(100);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until `done()` or kSpinTime passes; returns done().
template <typename Predicate>
bool SpinUntil(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  while (!done()) {
    for (int i = 0; i < 64; ++i) CpuRelax();
    if (std::chrono::steady_clock::now() > deadline) return done();
  }
  return true;
}

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
    stopping_.store(true);
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
    pending_.store(ranges - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_ready_.notify_all();
  int64_t begin, end;
  RangeBounds(n, ranges, 0, &begin, &end);
  body(begin, end);
  if (!SpinUntil([this] {
        return pending_.load(std::memory_order_acquire) == 0;
      })) {
    std::unique_lock<std::mutex> lock(mutex_);
    work_done_.wait(lock, [this] {
      return pending_.load(std::memory_order_acquire) == 0;
    });
  }
}

void ThreadPool::WorkerLoop(int worker_index) {
  int64_t seen_generation = 0;
  while (true) {
    auto has_news = [&] {
      return stopping_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen_generation;
    };
    if (!SpinUntil(has_news)) {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, has_news);
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    const std::function<void(int64_t, int64_t)>* body;
    int64_t total;
    int ranges;
    {
      // The job fields were written under the mutex before the bump.
      std::lock_guard<std::mutex> lock(mutex_);
      seen_generation = generation_.load(std::memory_order_acquire);
      body = body_;
      total = total_;
      ranges = num_ranges_;
    }
    if (worker_index < ranges) {
      int64_t begin, end;
      RangeBounds(total, ranges, worker_index, &begin, &end);
      (*body)(begin, end);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        work_done_.notify_one();
      }
    }
  }
}

}  // namespace tvq::kernels::cpu
