#include "server/service/worker_pool.h"

#include <atomic>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "server/service/memory_budget.h"

namespace attnroll::service {
namespace {

TEST(WorkerPoolTest, BoundedQueueRefusesWhenFullAndRunsEverythingAccepted) {
  std::atomic<int> ran{0};
  absl::Notification release;
  {
    WorkerPool pool(1, 2);
    absl::Notification started;
    ASSERT_TRUE(pool.TrySubmit([&] {
      started.Notify();
      release.WaitForNotification();
      ++ran;
    }));
    started.WaitForNotification();  // the only worker is busy
    EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
    EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
    EXPECT_FALSE(pool.TrySubmit([&] { ++ran; }));  // queue of 2 is full
    EXPECT_EQ(pool.queued(), 2u);
    release.Notify();
  }  // the destructor drains and joins
  EXPECT_EQ(ran.load(), 3);
}

TEST(MemoryBudgetTest, ReservesUpToCapacityAndReleasesOnDestruction) {
  MemoryBudget budget(100);
  MemoryBudget::Reservation a, b, c;
  EXPECT_TRUE(budget.TryReserve(60, &a));
  EXPECT_FALSE(budget.TryReserve(41, &b));
  EXPECT_TRUE(budget.TryReserve(40, &b));
  EXPECT_EQ(budget.reserved(), 100);
  a.Release();
  EXPECT_EQ(budget.reserved(), 40);
  { MemoryBudget::Reservation moved = std::move(b); }
  EXPECT_EQ(budget.reserved(), 0);
  EXPECT_TRUE(budget.TryReserve(100, &c));
  EXPECT_TRUE(budget.TryReserve(0, &c));  // replacing releases the old one
  EXPECT_EQ(budget.reserved(), 0);
}

}  // namespace
}  // namespace attnroll::service

#include "server/service/parallel_for.h"

namespace attnroll::service {
namespace {

TEST(ParallelForTest, EveryItemOnceAcrossCallerAndHelpers) {
  WorkerPool pool(2, 8);
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
  WorkerPool pool(1, 1);
  absl::Notification release;
  ASSERT_TRUE(pool.TrySubmit([&] { release.WaitForNotification(); }));  // the worker is busy
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
}  // namespace attnroll::service
