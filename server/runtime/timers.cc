#include "server/runtime/timers.h"

namespace attnroll::runtime {

Timers::Timers() : thread_([this] { Run(); }) {}

Timers::~Timers() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

Timers::Id Timers::Schedule(absl::Time when, std::function<void()> callback) {
  absl::MutexLock lock(&mu_);
  const Id id = next_id_++;
  due_.emplace(std::make_pair(when, id), std::move(callback));
  when_.emplace(id, when);
  return id;
}

bool Timers::Cancel(Id id) {
  absl::MutexLock lock(&mu_);
  auto it = when_.find(id);
  if (it != when_.end()) {
    due_.erase({it->second, id});
    when_.erase(it);
    return true;
  }
  auto done = [this, id]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return running_ != id; };
  mu_.Await(absl::Condition(&done));
  return false;
}

void Timers::Run() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    if (!due_.empty() && due_.begin()->first.first <= now) {
      auto first = due_.begin();
      const Id id = first->first.second;
      std::function<void()> callback = std::move(first->second);
      due_.erase(first);
      when_.erase(id);
      running_ = id;
      mu_.Unlock();
      callback();
      mu_.Lock();
      running_ = 0;
      continue;
    }
    const absl::Time next = due_.empty() ? now + absl::Seconds(1) : due_.begin()->first.first;
    // Wakes for a new earlier timer, or at the next deadline.
    const absl::Time earliest = next;
    auto changed = [this, earliest]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return stopping_ || (!due_.empty() && due_.begin()->first.first < earliest);
    };
    mu_.AwaitWithDeadline(absl::Condition(&changed), next);
  }
}

}  // namespace attnroll::runtime
