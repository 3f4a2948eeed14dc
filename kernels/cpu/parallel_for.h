// A small persistent thread pool for the CPU kernels. No Abseil here.
#ifndef TVQ_KERNELS_CPU_PARALLEL_FOR_H_
#define TVQ_KERNELS_CPU_PARALLEL_FOR_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tvq::kernels::cpu {

class ThreadPool {
 public:
  // `num_threads` workers including the calling thread (>= 1).
  explicit ThreadPool(int num_threads);
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool();

  int num_threads() const { return num_threads_; }

  // Calls body(begin, end) over a partition of [0, n) into at most
  // num_threads() contiguous ranges of at least `min_grain` items, and
  // returns when all are done. Not reentrant: call from one thread at a time.
  // Workers spin briefly for the next job before sleeping: a decode step
  // issues dozens of short parallel sections, and a condition-variable
  // wake-up per section would cost more than the work.
  void ParallelFor(int64_t n, int64_t min_grain,
                   const std::function<void(int64_t, int64_t)>& body);

 private:
  void WorkerLoop(int worker_index);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  // The job: written before generation_ is bumped (release), read after it
  // is seen (acquire).
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t total_ = 0;
  int num_ranges_ = 0;
  std::atomic<int64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_PARALLEL_FOR_H_
