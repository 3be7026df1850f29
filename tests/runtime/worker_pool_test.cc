#include "server/runtime/worker_pool.h"

#include <atomic>
#include <cmath>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include "absl/synchronization/notification.h"
#include "server/runtime/metrics.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::runtime {
namespace {

using ::testing::Eq;
using ::testing::HasSubstr;
using testing::StatusIs;

// The value of the unlabelled counter or gauge `name`, read back the way a
// scrape reads it.
double MetricValue(const Metrics& metrics, const std::string& name) {
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    if (family.metric.size() != 1) {
      ADD_FAILURE() << name << ": expected one series, got " << family.metric.size();
      return NAN;
    }
    const prometheus::ClientMetric& m = family.metric[0];
    return family.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
  }
  ADD_FAILURE() << "no metric " << name;
  return NAN;
}

constexpr char kDepth[] = "attnroll_worker_queue_depth";
constexpr char kRejections[] = "attnroll_worker_queue_rejections_total";

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
    // The queue of 2 is full.
    EXPECT_THAT(pool.Submit([&] { ++ran; }),
                StatusIs(absl::StatusCode::kResourceExhausted,
                         Eq("server: worker queue full (2 tasks waiting); retry later")));
    EXPECT_EQ(pool.queued(), 2u);
    release.Notify();
  }  // the destructor drains and joins
  EXPECT_EQ(ran.load(), 3);
}

TEST(WorkerPoolTest, OfferRefusesWithoutCountingAndTheMetricsFollowTheQueue) {
  Metrics metrics;
  std::atomic<int> ran{0};
  absl::Notification release, both_ran;
  {
    WorkerPool pool(1, 2, &metrics);
    absl::Notification started;
    ASSERT_TRUE(pool.Submit([&] {
                      started.Notify();
                      release.WaitForNotification();
                    })
                    .ok());
    started.WaitForNotification();  // the only worker took it: nothing waits
    EXPECT_EQ(MetricValue(metrics, kDepth), 0);
    auto task = [&] {
      if (++ran == 2) both_ran.Notify();
    };
    ASSERT_TRUE(pool.Submit(task).ok());
    EXPECT_EQ(MetricValue(metrics, kDepth), 1);
    EXPECT_TRUE(pool.Offer(task));  // optional work is queued while there is room
    EXPECT_EQ(MetricValue(metrics, kDepth), 2);
    EXPECT_EQ(MetricValue(metrics, kRejections), 0);

    EXPECT_THAT(pool.Submit(task), StatusIs(absl::StatusCode::kResourceExhausted,
                                            HasSubstr("worker queue full")));
    EXPECT_EQ(MetricValue(metrics, kRejections), 1);
    EXPECT_FALSE(pool.Offer(task));  // refused, and not counted as a rejection
    EXPECT_EQ(MetricValue(metrics, kRejections), 1);
    EXPECT_EQ(MetricValue(metrics, kDepth), 2);
    EXPECT_EQ(pool.queued(), 2u);

    release.Notify();
    both_ran.WaitForNotification();  // each task is dequeued before it runs
    EXPECT_EQ(MetricValue(metrics, kDepth), 0);
    EXPECT_EQ(pool.queued(), 0u);
  }
  EXPECT_EQ(ran.load(), 2);  // the refused ones never ran
  EXPECT_EQ(MetricValue(metrics, kRejections), 1);
}

}  // namespace
}  // namespace attnroll::runtime
