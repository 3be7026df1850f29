// Large buffers kept across passes. A pass of a given shape allocates the
// same few large buffers every time (its fused matrices, the layers it keeps,
// the rollout products); taking them back from this pool instead of from the
// OS saves every page fault of touching fresh memory. Buffers of 64 KiB and
// more are mapped (those of 2 MiB and more aligned to 2 MiB and marked for
// transparent huge pages: 512 times fewer faults when new), and given back
// to the OS when released beyond the cap or by Trim. Thread-safe.
#ifndef ATTNROLL_SERVER_RUNTIME_BUFFER_POOL_H_
#define ATTNROLL_SERVER_RUNTIME_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::runtime {

class BufferPool {
 public:
  // Keeps at most `max_cached_bytes` of released buffers.
  explicit BufferPool(int64_t max_cached_bytes);
  ~BufferPool();  // unmaps what it keeps (every buffer must have been released)
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // At least `bytes` bytes, 64-byte aligned, contents unspecified.
  void* Allocate(size_t bytes);
  // A buffer from Allocate(bytes) of this pool.
  void Release(void* data, size_t bytes);
  // Gives every kept buffer back to the OS.
  void Trim();
  // A new cap (what is kept beyond it goes back to the OS).
  void SetMaxCachedBytes(int64_t max_cached_bytes);

  struct Stats {
    int64_t cached_bytes = 0;  // released, kept for reuse
    int64_t reused = 0;        // allocations served from the kept buffers
    int64_t mapped = 0;        // allocations that mapped fresh memory
  };
  Stats stats() const;

 private:
  mutable absl::Mutex mu_;
  int64_t max_cached_bytes_ ABSL_GUARDED_BY(mu_);
  // Kept buffers by their mapped size.
  std::multimap<size_t, void*> free_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_BUFFER_POOL_H_
