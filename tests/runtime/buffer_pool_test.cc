// The pool of large buffers: a released buffer is handed out again for the
// same size (no fresh memory), small ones come from the heap, the cap and
// Trim give memory back, and threads may share it.
#include "server/runtime/buffer_pool.h"

#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace attnroll::runtime {
namespace {

TEST(BufferPoolTest, ReleasedBuffersAreReusedForTheSameSize) {
  BufferPool pool(int64_t{64} << 20);
  const size_t big = size_t{16} << 20, mid = 300 << 10;
  void* a = pool.Allocate(big);
  void* b = pool.Allocate(mid);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % (2 << 20), 0u);  // huge-page aligned
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  std::memset(a, 1, big);
  std::memset(b, 2, mid);
  EXPECT_EQ(pool.stats().mapped, 2);
  pool.Release(a, big);
  pool.Release(b, mid);
  EXPECT_EQ(pool.stats().cached_bytes, int64_t{16 << 20} + int64_t{300 << 10});
  EXPECT_EQ(pool.Allocate(big), a);
  EXPECT_EQ(pool.Allocate(mid), b);
  EXPECT_EQ(pool.stats().reused, 2);
  EXPECT_EQ(pool.stats().cached_bytes, 0);
  // A different size maps fresh memory.
  void* c = pool.Allocate(big + 4096 * 1024);
  EXPECT_NE(c, a);
  EXPECT_EQ(pool.stats().mapped, 3);
  pool.Release(a, big);
  pool.Release(b, mid);
  pool.Release(c, big + 4096 * 1024);
  pool.Trim();
  EXPECT_EQ(pool.stats().cached_bytes, 0);
}

TEST(BufferPoolTest, SmallBuffersComeFromTheHeapAndTheCapHolds) {
  BufferPool pool(int64_t{3} << 20);
  void* small = pool.Allocate(1000);
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small) % 64, 0u);
  pool.Release(small, 1000);
  EXPECT_EQ(pool.stats().cached_bytes, 0);
  EXPECT_EQ(pool.stats().mapped, 0);
  void* x = pool.Allocate(size_t{2} << 20);
  void* y = pool.Allocate(size_t{2} << 20);
  pool.Release(x, size_t{2} << 20);
  pool.Release(y, size_t{2} << 20);  // over the 3 MiB cap: unmapped
  EXPECT_EQ(pool.stats().cached_bytes, int64_t{2} << 20);
  pool.SetMaxCachedBytes(0);
  EXPECT_EQ(pool.stats().cached_bytes, 0);
  BufferPool none(0);
  void* z = none.Allocate(size_t{1} << 20);
  none.Release(z, size_t{1} << 20);
  EXPECT_EQ(none.stats().cached_bytes, 0);
}

TEST(BufferPoolTest, ThreadsShareIt) {
  BufferPool pool(int64_t{256} << 20);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 200; ++i) {
        const size_t bytes = (size_t{1} << 20) * (1 + (i + t) % 3);
        char* p = static_cast<char*>(pool.Allocate(bytes));
        p[0] = static_cast<char>(t);
        p[bytes - 1] = static_cast<char>(i);
        EXPECT_EQ(p[0], static_cast<char>(t));
        pool.Release(p, bytes);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const BufferPool::Stats s = pool.stats();
  EXPECT_EQ(s.reused + s.mapped, 800);
  EXPECT_GT(s.reused, 700);  // at most a few buffers per size and thread are ever mapped
}

}  // namespace
}  // namespace attnroll::runtime
