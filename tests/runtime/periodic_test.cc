// The periodic checker: runs on its interval, at once when poked, never two
// runs at a time, and stops cleanly.
#include "server/runtime/periodic.h"

#include <atomic>

#include <gtest/gtest.h>

#include "absl/time/clock.h"

namespace attnroll::runtime {
namespace {

// Waits up to `within` for `done`.
template <typename F>
bool Eventually(F done, absl::Duration within) {
  const absl::Time deadline = absl::Now() + within;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

TEST(PeriodicTest, RunsOnItsIntervalAndAtOnceWhenPoked) {
  std::atomic<int> runs{0};
  {
    Periodic p(absl::Milliseconds(20), [&] { ++runs; });
    EXPECT_TRUE(Eventually([&] { return runs.load() >= 3; }, absl::Seconds(10)));
  }
  const int at_stop = runs.load();
  absl::SleepFor(absl::Milliseconds(60));
  EXPECT_EQ(runs.load(), at_stop);  // stopped with the object

  // An hour-long interval: only pokes run it, and pokes before a run are one run.
  std::atomic<int> poked{0};
  std::atomic<bool> release{false};
  Periodic p(absl::Hours(1), [&] {
    ++poked;
    while (!release.load()) absl::SleepFor(absl::Milliseconds(1));
  });
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(poked.load(), 0);
  p.Poke();
  ASSERT_TRUE(Eventually([&] { return poked.load() == 1; }, absl::Seconds(10)));
  p.Poke();  // while the first run is still going: queued once
  p.Poke();
  release = true;
  ASSERT_TRUE(Eventually([&] { return p.runs() == 2; }, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(p.runs(), 2);
  EXPECT_EQ(poked.load(), 2);
}

}  // namespace
}  // namespace attnroll::runtime
