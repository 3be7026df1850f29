#include "server/runtime/parallel_for.h"

#include <atomic>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "server/runtime/worker_pool.h"

namespace attnroll::runtime {
namespace {

TEST(ParallelForTest, EveryItemOnceAcrossCallerAndHelpers) {
  WorkerPool pool(2, 2, 8);
  std::vector<std::atomic<int>> seen(1000);
  std::atomic<int> participants{0};
  ParallelFor(&pool, 2, 1000, {}, [&](const ClaimFn& claim) {
    ++participants;
    int64_t i;
    while (claim(&i)) seen[i].fetch_add(1);
  });
  for (auto& s : seen) EXPECT_EQ(s.load(), 1);
  EXPECT_GE(participants.load(), 1);
}

TEST(ParallelForTest, StopsWhenAskedAndWorksWithAFullPool) {
  // Declared before the pool, so the pool's destructor joins the worker
  // before the notification it may still be waiting on goes away.
  absl::Notification release;
  WorkerPool pool(1, 1, 1);
  ASSERT_TRUE(pool.Submit(Lane::kStep, [&] { release.WaitForNotification(); }).ok());  // the worker is busy
  std::atomic<int> done{0};
  // The pool cannot help: the caller does all the work.
  ParallelFor(&pool, 4, 50, {}, [&](const ClaimFn& claim) {
    int64_t i;
    while (claim(&i)) ++done;
  });
  EXPECT_EQ(done.load(), 50);
  done = 0;
  ParallelFor(&pool, 0, 50, [&] { return done.load() >= 10; }, [&](const ClaimFn& claim) {
    int64_t i;
    while (claim(&i)) ++done;
  });
  EXPECT_EQ(done.load(), 10);
  release.Notify();
}

}  // namespace
}  // namespace attnroll::runtime
