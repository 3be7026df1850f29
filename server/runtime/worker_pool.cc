#include "server/runtime/worker_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/runtime/metrics.h"
#include "server/runtime/refusal.h"

namespace attnroll::runtime {

const char* LaneName(Lane lane) {
  switch (lane) {
    case Lane::kStep: return "step";
    case Lane::kLong: return "long";
    case Lane::kNew: return "new";
  }
  return "step";
}

WorkerPool::WorkerPool(int num_threads, int long_workers, size_t max_queued, Metrics* metrics)
    : long_workers_(std::clamp(long_workers, 1, std::max(1, num_threads))),
      max_queued_(max_queued),
      metrics_(metrics) {
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

absl::Status WorkerPool::Submit(Lane lane, std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return Refused(Refusal::kShutdown, "server: shutting down, not accepting work");
  switch (lane) {
    case Lane::kStep: steps_.push_back(std::move(task)); break;
    case Lane::kLong: long_.push_back(std::move(task)); break;
    case Lane::kNew:
      if (new_.size() >= max_queued_) {
        if (metrics_ != nullptr) metrics_->QueueRejected();
        return Refused(Refusal::kQueue, absl::StrCat("server: worker queue full (", max_queued_,
                                                     " new passes and calls waiting); retry later"));
      }
      new_.push_back(std::move(task));
      break;
  }
  return absl::OkStatus();
}

bool WorkerPool::Offer(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || helpers_.size() >= threads_.size()) return false;
  helpers_.push_back(std::move(task));
  return true;
}

bool WorkerPool::ShortWorkWaiting() const {
  absl::MutexLock lock(&mu_);
  return !steps_.empty() || !new_.empty();
}

size_t WorkerPool::queued(Lane lane) const {
  absl::MutexLock lock(&mu_);
  switch (lane) {
    case Lane::kStep: return steps_.size();
    case Lane::kLong: return long_.size();
    case Lane::kNew: return new_.size();
  }
  return 0;
}

size_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return steps_.size() + long_.size() + new_.size();
}

void WorkerPool::Run() {
  for (;;) {
    std::function<void()> task;
    bool is_long = false;
    {
      absl::MutexLock lock(&mu_);
      auto runnable = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return !steps_.empty() || !new_.empty() || !helpers_.empty() ||
               (!long_.empty() && running_long_ < long_workers_) ||
               (stopping_ && long_.empty());
      };
      mu_.Await(absl::Condition(&runnable));
      std::deque<std::function<void()>>* from = nullptr;
      if (!steps_.empty()) {
        from = &steps_;
      } else if (!long_.empty() && running_long_ < long_workers_) {
        from = &long_;
        is_long = true;
      } else if (!new_.empty()) {
        from = &new_;
      } else if (!helpers_.empty()) {
        from = &helpers_;
      } else {
        return;  // stopping and drained
      }
      task = std::move(from->front());
      from->pop_front();
      if (is_long) ++running_long_;
    }
    task();
    if (is_long) {
      absl::MutexLock lock(&mu_);
      --running_long_;
    }
  }
}

}  // namespace attnroll::runtime
