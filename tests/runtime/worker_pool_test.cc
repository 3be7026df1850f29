#include "server/runtime/worker_pool.h"

#include <atomic>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "server/runtime/memory_budget.h"

namespace attnroll::runtime {
namespace {

TEST(WorkerPoolTest, BoundedQueueRefusesWhenFullAndRunsEverythingAccepted) {
  std::atomic<int> ran{0};
  absl::Notification release;
  {
    WorkerPool pool(1, 2);
    absl::Notification started;
    ASSERT_TRUE(pool.Submit([&] {
                      started.Notify();
                      release.WaitForNotification();
                      ++ran;
                    })
                    .ok());
    started.WaitForNotification();  // the only worker is busy
    EXPECT_TRUE(pool.Submit([&] { ++ran; }).ok());
    EXPECT_TRUE(pool.Submit([&] { ++ran; }).ok());
    const absl::Status full = pool.Submit([&] { ++ran; });  // queue of 2 is full
    EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(full.message(), "server: worker queue full (2 tasks waiting); retry later");
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
}  // namespace attnroll::runtime

#include "server/runtime/parallel_for.h"

namespace attnroll::runtime {
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
  ASSERT_TRUE(pool.Submit([&] { release.WaitForNotification(); }).ok());  // the worker is busy
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
