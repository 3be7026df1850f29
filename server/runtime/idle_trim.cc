#include "server/runtime/idle_trim.h"

#include <utility>

namespace attnroll::runtime {

IdleTrim::IdleTrim(absl::Duration quiet, Timers* timers, std::function<bool()> idle,
                   std::function<void()> trim)
    : quiet_(quiet), timers_(timers), idle_(std::move(idle)), trim_(std::move(trim)) {}

IdleTrim::~IdleTrim() { Stop(); }

void IdleTrim::Stop() {
  Timers::Id timer;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    timer = timer_;
    timer_ = 0;
  }
  // Outside the lock: Cancel waits for a Fire that is running, which takes it.
  if (timer != 0) timers_->Cancel(timer);
}

void IdleTrim::Idle() {
  absl::MutexLock lock(&mu_);
  idle_since_ = absl::Now();
  if (timer_ == 0 && !stopping_) {
    timer_ = timers_->Schedule(idle_since_ + quiet_, [this] { Fire(); });
  }
}

void IdleTrim::Fire() {
  absl::MutexLock lock(&mu_);
  timer_ = 0;
  if (stopping_) return;
  // Busy again: the release that ends it calls Idle and arms a new timer.
  if (!idle_()) return;
  const absl::Time due = idle_since_ + quiet_;
  if (absl::Now() < due) {  // idle again since this timer was armed
    timer_ = timers_->Schedule(due, [this] { Fire(); });
    return;
  }
  ++trims_;
  trim_();
}

int IdleTrim::trims() const {
  absl::MutexLock lock(&mu_);
  return trims_;
}

}  // namespace attnroll::runtime
