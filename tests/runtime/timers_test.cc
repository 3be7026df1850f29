#include "server/runtime/timers.h"

#include <atomic>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace attnroll::runtime {
namespace {

TEST(TimersTest, RunsInDeadlineOrderAndCancelPreventsARun) {
  Timers timers;
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification last;
  const absl::Time now = absl::Now();
  auto record = [&](int i) {
    return [&, i] {
      absl::MutexLock lock(&mu);
      order.push_back(i);
      if (i == 3) last.Notify();
    };
  };
  timers.Schedule(now + absl::Milliseconds(60), record(3));
  timers.Schedule(now + absl::Milliseconds(20), record(1));
  const Timers::Id cancelled = timers.Schedule(now + absl::Milliseconds(30), record(99));
  timers.Schedule(now + absl::Milliseconds(40), record(2));
  EXPECT_TRUE(timers.Cancel(cancelled));
  ASSERT_TRUE(last.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_GE(absl::Now() - now, absl::Milliseconds(60));
  absl::MutexLock lock(&mu);
  EXPECT_THAT(order, ::testing::ElementsAre(1, 2, 3));
}

TEST(TimersTest, CancelWaitsForARunningCallback) {
  Timers timers;
  absl::Notification running, release;
  std::atomic<bool> done{false};
  const Timers::Id id = timers.Schedule(absl::Now(), [&] {
    running.Notify();
    release.WaitForNotification();
    absl::SleepFor(absl::Milliseconds(20));
    done = true;
  });
  running.WaitForNotification();
  release.Notify();
  EXPECT_FALSE(timers.Cancel(id));  // it ran: Cancel returns only after it is done
  EXPECT_TRUE(done.load());
}

TEST(TimersTest, AnEarlierTimerScheduledLaterWakesTheThread) {
  Timers timers;
  absl::Notification fired;
  timers.Schedule(absl::Now() + absl::Seconds(30), [] {});
  const absl::Time start = absl::Now();
  timers.Schedule(start + absl::Milliseconds(10), [&] { fired.Notify(); });
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

}  // namespace
}  // namespace attnroll::runtime
