#include "tests/kernels/cuda_emulator.h"

#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

namespace tvq::emu {
namespace {

constexpr int kWarp = 32;
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kMaxSharedBytes = 227 * 1024;

enum class FiberState { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  dim3 thread_index;
  FiberState state = FiberState::kReady;
};

// The block being run.
struct Emulation {
  dim3 grid, block, block_index;
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int current = -1;
  std::vector<unsigned char> shared;
  std::vector<uint64_t> exchange;  // one slot per thread
  const std::function<void()>* body = nullptr;
};

Emulation* g_emulation = nullptr;
// Fiber stacks, allocated once and reused by every launch.
std::vector<std::unique_ptr<char[]>> g_stacks;
cudaError_t g_last_error = cudaSuccess;
std::string g_last_message;
int64_t g_launches = 0;

Emulation& Current() {
  if (g_emulation == nullptr) {
    std::fprintf(stderr,
                 "cuda emulator: device code called outside a launch\n");
    std::abort();
  }
  return *g_emulation;
}

void FiberEntry() {
  Emulation& emulation = Current();
  (*emulation.body)();
  emulation.fibers[emulation.current].state = FiberState::kDone;
  // Returning resumes uc_link, the scheduler.
}

void Yield(FiberState state) {
  Emulation& emulation = Current();
  Fiber& fiber = emulation.fibers[emulation.current];
  fiber.state = state;
  swapcontext(&fiber.context, &emulation.scheduler);
}

const char* StateName(FiberState state) {
  switch (state) {
    case FiberState::kReady:
      return "ready";
    case FiberState::kAtBlockBarrier:
      return "__syncthreads";
    case FiberState::kAtWarpBarrier:
      return "warp operation";
    case FiberState::kDone:
      return "exited";
  }
  return "?";
}

// Runs one block to completion; returns an empty string or what went wrong.
std::string RunBlock(Emulation& emulation) {
  const int threads = static_cast<int>(emulation.fibers.size());
  for (int t = 0; t < threads; ++t) {
    Fiber& fiber = emulation.fibers[t];
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = fiber.stack;
    fiber.context.uc_stack.ss_size = kStackBytes;
    fiber.context.uc_link = &emulation.scheduler;
    makecontext(&fiber.context, FiberEntry, 0);
    fiber.state = FiberState::kReady;
  }
  std::fill(emulation.shared.begin(), emulation.shared.end(), 0xff);  // NaNs
  const int warps = (threads + kWarp - 1) / kWarp;
  // Between block barriers each warp runs as far as it can before the next
  // one starts, in an order (of warps, and of lanes within a warp) shuffled
  // at every barrier by a fixed-seed generator, so that a missing
  // __syncthreads shows up whichever side of it the faulty warp is, and runs
  // are reproducible.
  std::mt19937 order_engine(static_cast<uint32_t>(
      emulation.block_index.x * 7919u + emulation.block_index.y * 104729u +
      emulation.block_index.z * 1299709u + 17u));
  std::vector<int> warp_order(warps), lane_order(kWarp);
  std::iota(warp_order.begin(), warp_order.end(), 0);
  std::iota(lane_order.begin(), lane_order.end(), 0);
  while (true) {
    std::shuffle(warp_order.begin(), warp_order.end(), order_engine);
    std::shuffle(lane_order.begin(), lane_order.end(), order_engine);
    for (const int w : warp_order) {
      const int begin = w * kWarp;
      const int end = begin + kWarp < threads ? begin + kWarp : threads;
      while (true) {
        for (const int lane : lane_order) {
          const int t = begin + lane;
          if (t >= end || emulation.fibers[t].state != FiberState::kReady)
            continue;
          emulation.current = t;
          swapcontext(&emulation.scheduler, &emulation.fibers[t].context);
        }
        int waiting = 0, done = 0;
        for (int t = begin; t < end; ++t) {
          waiting += emulation.fibers[t].state == FiberState::kAtWarpBarrier;
          done += emulation.fibers[t].state == FiberState::kDone;
        }
        if (waiting == 0 || waiting + done < end - begin) break;
        if (done > 0) {
          return "warp " + std::to_string(w) + ": a warp operation while " +
                 std::to_string(done) + " lane(s) have exited";
        }
        for (int t = begin; t < end; ++t) {
          emulation.fibers[t].state = FiberState::kReady;
        }
      }
    }
    bool all_done = true, all_at_barrier = true;
    for (const Fiber& fiber : emulation.fibers) {
      all_done = all_done && fiber.state == FiberState::kDone;
      all_at_barrier =
          all_at_barrier && (fiber.state == FiberState::kDone ||
                             fiber.state == FiberState::kAtBlockBarrier);
    }
    if (all_done) return "";
    if (all_at_barrier) {
      for (Fiber& fiber : emulation.fibers) {
        if (fiber.state == FiberState::kAtBlockBarrier)
          fiber.state = FiberState::kReady;
      }
      continue;
    }
    std::string message = "deadlock: threads wait at different barriers:";
    for (int t = 0; t < threads; t += 1) {
      if (t == 0 ||
          emulation.fibers[t].state != emulation.fibers[t - 1].state) {
        message += " thread " + std::to_string(t) + " " +
                   StateName(emulation.fibers[t].state) + ";";
      }
    }
    return message;
  }
}

void Fail(cudaError_t error, const std::string& message) {
  if (g_last_error == cudaSuccess) {
    g_last_error = error;
    g_last_message = message;
  }
}

}  // namespace

const dim3& ThreadIndex() {
  Emulation& emulation = Current();
  return emulation.fibers[emulation.current].thread_index;
}
const dim3& BlockIndex() { return Current().block_index; }
const dim3& BlockDim() { return Current().block; }
const dim3& GridDim() { return Current().grid; }
void* DynamicShared() { return Current().shared.data(); }
void SyncThreads() { Yield(FiberState::kAtBlockBarrier); }

int LaneId() { return Current().current % kWarp; }

uint64_t WarpExchange(uint64_t bits, int source_lane) {
  Emulation& emulation = Current();
  const int me = emulation.current;
  emulation.exchange[me] = bits;
  Yield(FiberState::kAtWarpBarrier);
  const int source = me - me % kWarp + source_lane;
  if (source_lane < 0 || source_lane >= kWarp ||
      source >= static_cast<int>(emulation.fibers.size())) {
    std::fprintf(stderr, "cuda emulator: shuffle from missing lane %d\n",
                 source_lane);
    std::abort();
  }
  const uint64_t result = emulation.exchange[source];
  Yield(FiberState::kAtWarpBarrier);  // nobody overwrites before all read
  return result;
}

unsigned Ballot(unsigned mask, bool predicate) {
  Emulation& emulation = Current();
  const int me = emulation.current;
  emulation.exchange[me] = predicate ? 1 : 0;
  Yield(FiberState::kAtWarpBarrier);
  const int begin = me - me % kWarp;
  const int end = begin + kWarp < static_cast<int>(emulation.fibers.size())
                      ? begin + kWarp
                      : static_cast<int>(emulation.fibers.size());
  unsigned result = 0;
  for (int t = begin; t < end; ++t) {
    if (emulation.exchange[t] != 0) result |= 1u << (t - begin);
  }
  Yield(FiberState::kAtWarpBarrier);
  return result & mask;
}

void RunGrid(dim3 grid, dim3 block, size_t shared_bytes,
             const std::function<void()>& body) {
  ++g_launches;
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64) {
    Fail(cudaErrorInvalidConfiguration,
         "block of " + std::to_string(threads) + " threads");
    return;
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535) {
    Fail(cudaErrorInvalidConfiguration, "grid " + std::to_string(grid.x) + "x" +
                                            std::to_string(grid.y) + "x" +
                                            std::to_string(grid.z));
    return;
  }
  if (shared_bytes > kMaxSharedBytes) {
    Fail(cudaErrorInvalidValue,
         std::to_string(shared_bytes) + " bytes of dynamic shared memory");
    return;
  }
  Emulation emulation;
  emulation.grid = grid;
  emulation.block = block;
  emulation.body = &body;
  emulation.shared.resize(shared_bytes);
  emulation.exchange.resize(threads);
  emulation.fibers.resize(threads);
  for (uint64_t t = 0; t < threads; ++t) {
    Fiber& fiber = emulation.fibers[t];
    if (g_stacks.size() <= t) g_stacks.emplace_back(new char[kStackBytes]);
    fiber.stack = g_stacks[t].get();
    fiber.thread_index = dim3(
        static_cast<unsigned>(t % block.x),
        static_cast<unsigned>(t / block.x % block.y),
        static_cast<unsigned>(t / (static_cast<uint64_t>(block.x) * block.y)));
  }
  Emulation* previous = g_emulation;
  g_emulation = &emulation;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        emulation.block_index = dim3(x, y, z);
        const std::string problem = RunBlock(emulation);
        if (!problem.empty()) {
          Fail(cudaErrorLaunchFailure, "block (" + std::to_string(x) + "," +
                                           std::to_string(y) + "," +
                                           std::to_string(z) + "): " + problem);
          g_emulation = previous;
          return;
        }
      }
    }
  }
  g_emulation = previous;
}

cudaError_t GetLastError() {
  const cudaError_t error = g_last_error;
  g_last_error = cudaSuccess;
  return error;
}

std::string LastErrorMessage() { return g_last_message; }

int64_t LaunchCount() { return g_launches; }

}  // namespace tvq::emu
