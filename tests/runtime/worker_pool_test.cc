// The worker pool's lanes: new work is bounded and refused at once with the
// one refusal message; admitted steps and long work are always queued; steps
// go first; long work never takes every worker; helpers yield.
#include "server/runtime/worker_pool.h"

#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/runtime/metrics.h"
#include "server/runtime/refusal.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::Eq;
using testing::IsOk;
using testing::StatusIs;

double Counter(const Metrics& metrics, const std::string& name) {
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name == name && family.metric.size() == 1) return family.metric[0].counter.value;
  }
  ADD_FAILURE() << "no single-series metric " << name;
  return NAN;
}

// Occupies every worker of `pool` until `release` is notified.
void Block(WorkerPool& pool, int workers, absl::Notification& release) {
  std::atomic<int> started{0};
  for (int i = 0; i < workers; ++i) {
    ASSERT_THAT(pool.Submit(Lane::kStep, [&] {
      ++started;
      release.WaitForNotification();
    }), IsOk());
  }
  while (started.load() < workers) absl::SleepFor(absl::Milliseconds(1));
}

TEST(WorkerPoolTest, NewWorkIsBoundedAndRefusedAtOnceAdmittedWorkNever) {
  Metrics metrics;
  std::atomic<int> ran{0};
  absl::Notification release;
  {
    WorkerPool pool(1, 1, 2, &metrics);
    Block(pool, 1, release);
    EXPECT_THAT(pool.Submit(Lane::kNew, [&] { ++ran; }), IsOk());
    EXPECT_THAT(pool.Submit(Lane::kNew, [&] { ++ran; }), IsOk());
    const absl::Status full = pool.Submit(Lane::kNew, [&] { ++ran; });
    EXPECT_THAT(full, StatusIs(absl::StatusCode::kResourceExhausted,
                               Eq("server: worker queue full (2 new passes and calls waiting); retry later")));
    EXPECT_EQ(RefusalOf(full), Refusal::kQueue);
    EXPECT_EQ(Counter(metrics, "attnroll_worker_queue_rejections_total"), 1);
    // Steps and long work of admitted calls are queued whatever the depth.
    for (int i = 0; i < 50; ++i) {
      EXPECT_THAT(pool.Submit(Lane::kStep, [&] { ++ran; }), IsOk());
      EXPECT_THAT(pool.Submit(Lane::kLong, [&] { ++ran; }), IsOk());
    }
    EXPECT_EQ(pool.queued(Lane::kNew), 2u);
    EXPECT_EQ(pool.queued(Lane::kStep), 50u);
    EXPECT_EQ(pool.queued(Lane::kLong), 50u);
    EXPECT_EQ(pool.queued(), 102u);
    release.Notify();
  }  // the destructor drains and joins
  EXPECT_EQ(ran.load(), 102);
  EXPECT_EQ(Counter(metrics, "attnroll_worker_queue_rejections_total"), 1);
}

TEST(WorkerPoolTest, StepsFirstThenLongThenNew) {
  std::vector<std::string> order;
  absl::Mutex mu;
  auto note = [&](const char* what) {
    return [&, what] {
      absl::MutexLock lock(&mu);
      order.push_back(what);
    };
  };
  absl::Notification release;
  {
    WorkerPool pool(1, 1, 8);
    Block(pool, 1, release);
    ASSERT_THAT(pool.Submit(Lane::kNew, note("new")), IsOk());
    ASSERT_THAT(pool.Submit(Lane::kLong, note("long")), IsOk());
    ASSERT_THAT(pool.Submit(Lane::kStep, note("step")), IsOk());
    ASSERT_TRUE(pool.Offer(note("helper")));
    release.Notify();
  }
  EXPECT_THAT(order, ElementsAre("step", "long", "new", "helper"));
}

TEST(WorkerPoolTest, LongWorkNeverTakesEveryWorker) {
  // Two workers, one long slot: while long work runs, a step still runs at once.
  WorkerPool pool(2, 1, 8);
  absl::Notification long_started, release_long, step_ran;
  std::atomic<int> long_running{0}, max_long{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(pool.Submit(Lane::kLong, [&] {
      const int now = ++long_running;
      max_long = std::max(max_long.load(), now);
      if (!long_started.HasBeenNotified()) long_started.Notify();
      release_long.WaitForNotification();
      --long_running;
    }), IsOk());
  }
  long_started.WaitForNotification();
  ASSERT_THAT(pool.Submit(Lane::kStep, [&] { step_ran.Notify(); }), IsOk());
  EXPECT_TRUE(step_ran.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(pool.queued(Lane::kLong), 2u);  // the other long tasks wait for the slot
  release_long.Notify();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(max_long.load(), 1);
}

TEST(WorkerPoolTest, OfferIsBoundedAndShortWorkWaitingTellsHelpersToYield) {
  absl::Notification release;
  WorkerPool pool(1, 1, 4);
  Block(pool, 1, release);
  EXPECT_FALSE(pool.ShortWorkWaiting());
  EXPECT_TRUE(pool.Offer([] {}));
  EXPECT_FALSE(pool.Offer([] {}));  // at most one helper per worker waits
  EXPECT_FALSE(pool.ShortWorkWaiting());
  ASSERT_THAT(pool.Submit(Lane::kLong, [] {}), IsOk());
  EXPECT_FALSE(pool.ShortWorkWaiting());  // long work does not make helpers leave
  ASSERT_THAT(pool.Submit(Lane::kNew, [] {}), IsOk());
  EXPECT_TRUE(pool.ShortWorkWaiting());
  release.Notify();
}

}  // namespace
}  // namespace attnroll::runtime
