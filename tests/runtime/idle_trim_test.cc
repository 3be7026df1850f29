#include "server/runtime/idle_trim.h"

#include <atomic>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "server/runtime/timers.h"

namespace attnroll::runtime {
namespace {

// Waits up to 10 s for `trims` trims.
bool WaitForTrims(const IdleTrim& t, int trims) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (t.trims() < trims && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  return t.trims() >= trims;
}

TEST(IdleTrimTest, TrimsOnceAfterTheQuietPeriodAndNotAgainUntilTheNextIdle) {
  Timers timers;
  absl::Mutex mu;
  std::vector<absl::Time> at;
  const absl::Duration quiet = absl::Milliseconds(100);
  IdleTrim t(quiet, &timers, [] { return true; }, [&] {
    absl::MutexLock lock(&mu);
    at.push_back(absl::Now());
  });
  const absl::Time idle = absl::Now();
  t.Idle();
  ASSERT_TRUE(WaitForTrims(t, 1));
  absl::SleepFor(3 * quiet);
  EXPECT_EQ(t.trims(), 1);  // one trim per quiet period, not one per period of time
  t.Idle();
  ASSERT_TRUE(WaitForTrims(t, 2));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(at.size(), 2u);
  EXPECT_GE(at[0] - idle, quiet);
}

TEST(IdleTrimTest, EachIdleCallPushesTheTrimBackByTheQuietPeriod) {
  // A client calling in a loop: the server is idle for a moment after each
  // pass. No trim may come within `quiet` of any of those moments (times
  // taken before each call, so this holds however the threads are delayed).
  Timers timers;
  absl::Mutex mu;
  absl::Time trimmed = absl::InfinitePast();
  const absl::Duration quiet = absl::Milliseconds(300);
  IdleTrim t(quiet, &timers, [] { return true; }, [&] {
    absl::MutexLock lock(&mu);
    trimmed = absl::Now();
  });
  std::vector<absl::Time> calls;
  for (int i = 0; i < 20; ++i) {
    calls.push_back(absl::Now());
    t.Idle();
    absl::SleepFor(absl::Milliseconds(40));
  }
  ASSERT_TRUE(WaitForTrims(t, 1));
  absl::SleepFor(quiet);
  EXPECT_EQ(t.trims(), 1);
  absl::MutexLock lock(&mu);
  for (absl::Time c : calls) {
    if (c < trimmed) {
      EXPECT_GE(trimmed - c, quiet) << "a trim " << (trimmed - c) << " after an idle moment";
    }
  }
  EXPECT_GE(trimmed - calls.back(), quiet);
}

TEST(IdleTrimTest, NoTrimWhileAPassIsInFlight) {
  Timers timers;
  std::atomic<bool> idle{false};
  std::atomic<int> trims{0};
  const absl::Duration quiet = absl::Milliseconds(50);
  IdleTrim t(quiet, &timers, [&] { return idle.load(); }, [&] { trims++; });
  t.Idle();  // the timer fires while "a pass" is in flight: no trim
  absl::SleepFor(6 * quiet);
  EXPECT_EQ(trims.load(), 0);
  idle = true;
  t.Idle();  // the pass that ended it
  ASSERT_TRUE(WaitForTrims(t, 1));
  EXPECT_EQ(trims.load(), 1);
}

TEST(IdleTrimTest, ATrimNotYetDueIsDroppedWithTheObject) {
  Timers timers;
  std::atomic<int> trims{0};
  {
    IdleTrim t(absl::Milliseconds(100), &timers, [] { return true; }, [&] { trims++; });
    t.Idle();
  }
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(trims.load(), 0);
}

TEST(IdleTrimTest, StopDropsATrimNotYetDueAndLaterIdleCallsDoNothing) {
  Timers timers;
  std::atomic<int> trims{0};
  IdleTrim t(absl::Milliseconds(50), &timers, [] { return true; }, [&] { trims++; });
  t.Idle();
  t.Stop();
  t.Idle();
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(trims.load(), 0);
  EXPECT_EQ(t.trims(), 0);
}

}  // namespace
}  // namespace attnroll::runtime
