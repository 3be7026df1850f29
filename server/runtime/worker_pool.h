// A fixed set of threads and a bounded queue: the one way work is handed to a
// worker. Submitting to a full queue fails at once with RESOURCE_EXHAUSTED
// (the caller passes the status on) instead of growing the queue.
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

class WorkerPool {
 public:
  // `metrics` (may be null) sees every rejection and the queue depth after
  // every change, so the gauge is true at every moment.
  WorkerPool(int num_threads, size_t max_queued, Metrics* metrics = nullptr);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when
  // the pool is stopping (the task is dropped either way).
  absl::Status Submit(std::function<void()> task);
  // Optional work that helps a running task (parallel-for helpers): queued
  // only if there is room, and a refusal is not counted as a rejection.
  bool Offer(std::function<void()> task);
  size_t queued() const;
  int num_threads() const { return static_cast<int>(threads_.size()); }
  size_t max_queued() const { return max_queued_; }

 private:
  void Run();
  void PublishDepth(size_t depth) const;

  const size_t max_queued_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_WORKER_POOL_H_
