#include "server/runtime/worker_pool.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/runtime/metrics.h"

namespace attnroll::runtime {

WorkerPool::WorkerPool(int num_threads, size_t max_queued, Metrics* metrics)
    : max_queued_(max_queued), metrics_(metrics) {
  threads_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { Run(); });
}

WorkerPool::~WorkerPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

absl::Status WorkerPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("server: shutting down, not accepting work");
  if (queue_.size() >= max_queued_) {
    if (metrics_ != nullptr) metrics_->QueueRejected();
    return absl::ResourceExhaustedError(absl::StrCat(
        "server: worker queue full (", max_queued_, " tasks waiting); retry later"));
  }
  queue_.push_back(std::move(task));
  PublishDepth(queue_.size());
  return absl::OkStatus();
}

bool WorkerPool::Offer(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || queue_.size() >= max_queued_) return false;
  queue_.push_back(std::move(task));
  PublishDepth(queue_.size());
  return true;
}

size_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

// Called under mu_, so the gauge moves in the same order as the queue.
void WorkerPool::PublishDepth(size_t depth) const {
  if (metrics_ != nullptr) metrics_->SetQueueDepth(depth);
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      PublishDepth(queue_.size());
    }
    task();
  }
}

}  // namespace attnroll::runtime
