#include "server/runtime/buffer_pool.h"

#include <sys/mman.h>

#include <cstdint>
#include <iterator>
#include <new>

namespace attnroll::runtime {
namespace {

constexpr size_t kMapped = size_t{64} << 10;  // smaller buffers come from the heap
constexpr size_t kPage = size_t{4} << 10;
constexpr size_t kHuge = size_t{2} << 20;

size_t MappedSize(size_t bytes) {
  const size_t unit = bytes >= kHuge ? kHuge : kPage;
  return (bytes + unit - 1) / unit * unit;
}

void* Map(size_t size) {
  if (size < kHuge) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return p;
  }
  // Aligned to 2 MiB so that every part of it can be a huge page.
  void* raw = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHuge - 1) / kHuge * kHuge;
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t end = start + size + kHuge;
  if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - (aligned + size));
  void* p = reinterpret_cast<void*>(aligned);
#ifdef MADV_HUGEPAGE
  madvise(p, size, MADV_HUGEPAGE);
#endif
  return p;
}

}  // namespace

BufferPool::BufferPool(int64_t max_cached_bytes) : max_cached_bytes_(max_cached_bytes) {}

BufferPool::~BufferPool() { Trim(); }

void* BufferPool::Allocate(size_t bytes) {
  if (bytes < kMapped) return ::operator new(bytes, std::align_val_t{64});
  const size_t size = MappedSize(bytes);
  {
    absl::MutexLock lock(&mu_);
    auto it = free_.find(size);
    if (it != free_.end()) {
      void* p = it->second;
      free_.erase(it);
      stats_.cached_bytes -= static_cast<int64_t>(size);
      ++stats_.reused;
      return p;
    }
    ++stats_.mapped;
  }
  return Map(size);
}

void BufferPool::Release(void* data, size_t bytes) {
  if (data == nullptr) return;
  if (bytes < kMapped) return ::operator delete(data, std::align_val_t{64});
  const size_t size = MappedSize(bytes);
  {
    absl::MutexLock lock(&mu_);
    if (stats_.cached_bytes + static_cast<int64_t>(size) <= max_cached_bytes_) {
      free_.emplace(size, data);
      stats_.cached_bytes += static_cast<int64_t>(size);
      return;
    }
  }
  munmap(data, size);
}

void BufferPool::Trim() {
  std::multimap<size_t, void*> kept;
  {
    absl::MutexLock lock(&mu_);
    kept.swap(free_);
    stats_.cached_bytes = 0;
  }
  for (const auto& [size, p] : kept) munmap(p, size);
}

void BufferPool::SetMaxCachedBytes(int64_t max_cached_bytes) {
  std::multimap<size_t, void*> over;
  {
    absl::MutexLock lock(&mu_);
    max_cached_bytes_ = max_cached_bytes;
    while (stats_.cached_bytes > max_cached_bytes_ && !free_.empty()) {
      auto it = std::prev(free_.end());  // the largest first
      stats_.cached_bytes -= static_cast<int64_t>(it->first);
      over.insert(*it);
      free_.erase(it);
    }
  }
  for (const auto& [size, p] : over) munmap(p, size);
}

BufferPool::Stats BufferPool::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace attnroll::runtime
