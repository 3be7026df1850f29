#include "server/runtime/periodic.h"

#include <utility>

namespace attnroll::runtime {

Periodic::Periodic(absl::Duration interval, std::function<void()> task)
    : interval_(interval), task_(std::move(task)), thread_([this] { Run(); }) {}

Periodic::~Periodic() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void Periodic::Poke() {
  absl::MutexLock lock(&mu_);
  poked_ = true;
}

int Periodic::runs() const {
  absl::MutexLock lock(&mu_);
  return runs_;
}

void Periodic::Run() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.AwaitWithTimeout(absl::Condition(this, &Periodic::Woken), interval_);
    if (stopping_) return;
    poked_ = false;
    mu_.Unlock();
    task_();
    mu_.Lock();
    ++runs_;
  }
}

}  // namespace attnroll::runtime
