// Admission by working memory: every pass reserves the bytes its analyses will
// allocate before it allocates them; over the budget the pass is refused.
#ifndef ATTNROLL_SERVER_RUNTIME_MEMORY_BUDGET_H_
#define ATTNROLL_SERVER_RUNTIME_MEMORY_BUDGET_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::runtime {

class MemoryBudget {
 public:
  // Releases its bytes on destruction.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(MemoryBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
    Reservation(Reservation&& other) noexcept { *this = std::move(other); }
    Reservation& operator=(Reservation&& other) noexcept;
    ~Reservation() { Release(); }
    void Release();
    int64_t bytes() const { return bytes_; }

   private:
    MemoryBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  explicit MemoryBudget(int64_t capacity) : capacity_(capacity) {}

  // False (and nothing reserved) when `bytes` does not fit.
  bool TryReserve(int64_t bytes, Reservation* out);
  int64_t reserved() const;
  int64_t capacity() const { return capacity_; }

 private:
  const int64_t capacity_;
  mutable absl::Mutex mu_;
  int64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_MEMORY_BUDGET_H_
