// A fixed set of threads and a bounded queue. Submitting to a full queue fails
// at once (the caller answers RESOURCE_EXHAUSTED) instead of growing the queue.
#ifndef ATTNROLL_SERVER_SERVICE_WORKER_POOL_H_
#define ATTNROLL_SERVER_SERVICE_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::service {

class WorkerPool {
 public:
  WorkerPool(int num_threads, size_t max_queued);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // False when the queue is full or the pool is shutting down.
  bool TrySubmit(std::function<void()> task);
  size_t queued() const;
  int num_threads() const { return static_cast<int>(threads_.size()); }
  size_t max_queued() const { return max_queued_; }

 private:
  void Run();

  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace attnroll::service

#endif  // ATTNROLL_SERVER_SERVICE_WORKER_POOL_H_
