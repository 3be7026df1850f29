// A fixed set of threads and three queues: the one way work is handed to a
// worker.
//   kStep: a step of an admitted pass or call (a layer message, a finish).
//          Always queued: once admitted, work is never refused for a full
//          queue; it waits, and gRPC's flow control pushes back on the sender.
//          (Each admitted call has a bounded number of steps outstanding.)
//   kLong: long work of an admitted call (attention flow's max flows, large
//          comparisons, audit items). Always queued; runs on at most
//          `long_workers` workers at once, so small passes always find one.
//   kNew:  work that would open a pass or a call (a header, a Compare).
//          Bounded by `max_queued`: a full queue refuses at once.
// Workers take steps first, then long work (while a long slot is free), then
// new work; optional helpers (Offer) only run on a worker with nothing else.
#ifndef ATTNROLL_SERVER_RUNTIME_WORKER_POOL_H_
#define ATTNROLL_SERVER_RUNTIME_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::runtime {

class Metrics;

enum class Lane { kStep, kLong, kNew };
inline constexpr Lane kAllLanes[] = {Lane::kStep, Lane::kLong, Lane::kNew};
const char* LaneName(Lane lane);  // "step", "long", "new"

class WorkerPool {
 public:
  // `metrics` (may be null) counts refusals of new work.
  WorkerPool(int num_threads, int long_workers, size_t max_queued, Metrics* metrics = nullptr);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task` on `lane`. Only kNew is ever refused: RESOURCE_EXHAUSTED
  // (refusal "queue") when max_queued new tasks wait; any lane gives
  // UNAVAILABLE once the pool is stopping. The task is dropped on refusal.
  absl::Status Submit(Lane lane, std::function<void()> task);
  // Optional work that helps a running task (parallel-for helpers): queued
  // only if there is room, run only by a worker that has nothing else to do,
  // and a refusal is not counted.
  bool Offer(std::function<void()> task);
  // Steps or new work are waiting: helpers should step aside.
  bool ShortWorkWaiting() const;

  size_t queued(Lane lane) const;
  size_t queued() const;  // every lane
  int num_threads() const { return static_cast<int>(threads_.size()); }
  int long_workers() const { return long_workers_; }
  size_t max_queued() const { return max_queued_; }

 private:
  void Run();

  const int long_workers_;
  const size_t max_queued_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> steps_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> long_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> new_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> helpers_ ABSL_GUARDED_BY(mu_);
  int running_long_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_WORKER_POOL_H_
