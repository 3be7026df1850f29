#include "server/runtime/memory_budget.h"

namespace attnroll::runtime {

MemoryBudget::Reservation& MemoryBudget::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    bytes_ = other.bytes_;
    other.budget_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void MemoryBudget::Reservation::Release() {
  if (budget_ != nullptr) {
    absl::MutexLock lock(&budget_->mu_);
    budget_->reserved_ -= bytes_;
  }
  budget_ = nullptr;
  bytes_ = 0;
}

bool MemoryBudget::TryReserve(int64_t bytes, Reservation* out) {
  {
    absl::MutexLock lock(&mu_);
    if (bytes < 0 || bytes > capacity_ - reserved_) return false;
    reserved_ += bytes;
  }
  *out = Reservation(this, bytes);  // may release an older reservation: not under mu_
  return true;
}

int64_t MemoryBudget::reserved() const {
  absl::MutexLock lock(&mu_);
  return reserved_;
}

}  // namespace attnroll::runtime
