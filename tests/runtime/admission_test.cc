// Admission per pass: what fits is admitted at once; what cannot fit for now
// waits (bounded in count and time) and is admitted when room is freed, or
// refused with the limit that kept it out; client shares and connections.
#include "server/runtime/admission.h"

#include <atomic>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/runtime/refusal.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::runtime {
namespace {

using ::testing::HasSubstr;
using testing::IsOk;
using testing::StatusIs;

Admission::Request Req(std::string client, int64_t bytes, std::string connection = "") {
  Admission::Request r;
  r.client = client;
  r.connection = connection.empty() ? client + ":1" : connection;
  r.bytes = bytes;
  return r;
}

// Admit(), waiting for its answer.
absl::StatusOr<Admission::Ticket> AdmitAndWait(Admission& a, Admission::Request r) {
  absl::Notification done;
  absl::StatusOr<Admission::Ticket> out;
  a.Admit(std::move(r), [&](absl::StatusOr<Admission::Ticket> t) {
    out = std::move(t);
    done.Notify();
  });
  done.WaitForNotification();
  return out;
}

Admission::Limits SmallLimits() {
  Admission::Limits l;
  l.max_units = 4;
  l.max_bytes = 1000;
  l.client_share = 1.0;
  l.max_per_connection = 3;
  l.max_waiting = 2;
  l.max_wait = absl::Milliseconds(50);
  return l;
}

TEST(AdmissionTest, AdmitsWhatFitsAndRefusesWhatNeverCanAtOnce) {
  Timers timers;
  Admission a(SmallLimits(), &timers);
  auto t1 = a.TryAdmit(Req("x", 600));
  ASSERT_THAT(t1, IsOk());
  EXPECT_EQ(a.units(), 1);
  EXPECT_EQ(a.bytes(), 600);
  absl::Status too_big = AdmitAndWait(a, Req("x", 1001)).status();
  EXPECT_THAT(too_big, StatusIs(absl::StatusCode::kResourceExhausted,
                                HasSubstr("needs 1001 bytes of working memory, more than all of the "
                                          "server's max_memory_bytes of 1000")));
  EXPECT_EQ(RefusalOf(too_big), Refusal::kMemory);
  EXPECT_EQ(a.waiting(), 0);  // never waited
  t1->Release();
  EXPECT_EQ(a.units(), 0);
  EXPECT_EQ(a.bytes(), 0);
}

TEST(AdmissionTest, OnIdleRunsWhenAReleaseLeavesNothingHeld) {
  Timers timers;
  Admission::Limits limits = SmallLimits();
  limits.max_wait = absl::Seconds(60);  // the waiter below waits for a release, however slow
  Admission a(limits, &timers);
  int idle = 0;
  a.SetOnIdle([&] { ++idle; });
  auto t1 = a.TryAdmit(Req("x", 600));
  auto t2 = a.TryAdmit(Req("y", 100));
  ASSERT_THAT(t1, IsOk());
  ASSERT_THAT(t2, IsOk());
  t1->Release();
  EXPECT_EQ(idle, 0);  // y still holds one
  // A waiter admitted by a release keeps the server busy: no idle call.
  auto t3 = a.TryAdmit(Req("z", 950));  // 100 + 950 > 1000
  EXPECT_THAT(t3.status(), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("memory")));
  absl::Notification admitted;
  Admission::Ticket waiter;
  a.Admit(Req("z", 950), [&](absl::StatusOr<Admission::Ticket> t) {
    ASSERT_THAT(t, IsOk());
    waiter = *std::move(t);
    admitted.Notify();
  });
  t2->Release();
  ASSERT_TRUE(admitted.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(idle, 0);
  waiter.Release();
  EXPECT_EQ(idle, 1);
  waiter.Release();  // released already: nothing given back
  EXPECT_EQ(idle, 1);
}

TEST(AdmissionTest, AWaiterIsAdmittedWhenRoomIsFreed) {
  Timers timers;
  Admission::Limits l = SmallLimits();
  l.max_wait = absl::Seconds(10);
  Admission a(l, &timers);
  auto first = a.TryAdmit(Req("x", 700));
  ASSERT_THAT(first, IsOk());
  absl::Notification admitted;
  std::optional<absl::StatusOr<Admission::Ticket>> second;
  a.Admit(Req("y", 700), [&](absl::StatusOr<Admission::Ticket> t) {
    second = std::move(t);
    admitted.Notify();
  });
  EXPECT_EQ(a.waiting(), 1);
  EXPECT_FALSE(admitted.HasBeenNotified());
  first->Release();  // frees 700: the waiter fits and is admitted on this thread
  ASSERT_TRUE(admitted.HasBeenNotified());
  EXPECT_THAT(*second, IsOk());
  EXPECT_EQ(a.bytes(), 700);
  EXPECT_EQ(a.waiting(), 0);
}

TEST(AdmissionTest, AWaiterIsRefusedAfterMaxWaitNamingTheLimit) {
  Timers timers;
  Admission a(SmallLimits(), &timers);
  std::vector<absl::StatusOr<Admission::Ticket>> held;
  for (int i = 0; i < 4; ++i) held.push_back(a.TryAdmit(Req("x", 10, "x:" + std::to_string(i))));
  const absl::Time start = absl::Now();
  absl::Status refused = AdmitAndWait(a, Req("y", 10)).status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted,
                                HasSubstr("4 passes and calls are in flight, the server's "
                                          "max_passes_in_flight is 4 (after waiting")));
  EXPECT_EQ(RefusalOf(refused), Refusal::kPasses);
  // Waiting room for 2: a third waiter is refused at once.
  absl::Notification d1, d2;
  a.Admit(Req("y", 10), [&](absl::StatusOr<Admission::Ticket>) { d1.Notify(); });
  a.Admit(Req("y", 10), [&](absl::StatusOr<Admission::Ticket>) { d2.Notify(); });
  EXPECT_EQ(a.waiting(), 2);
  absl::StatusOr<Admission::Ticket> third = AdmitAndWait(a, Req("y", 10));
  EXPECT_EQ(RefusalOf(third.status()), Refusal::kPasses);
  d1.WaitForNotification();
  d2.WaitForNotification();
}

TEST(AdmissionTest, OneClientCannotTakeMoreThanItsShare) {
  Timers timers;
  Admission::Limits l = SmallLimits();
  l.client_share = 0.5;  // 2 of 4 passes, 500 of 1000 bytes
  l.max_wait = absl::Milliseconds(20);
  Admission a(l, &timers);
  auto a1 = a.TryAdmit(Req("flood", 10, "f:1"));
  auto a2 = a.TryAdmit(Req("flood", 10, "f:2"));
  ASSERT_THAT(a1, IsOk());
  ASSERT_THAT(a2, IsOk());
  absl::Status third = AdmitAndWait(a, Req("flood", 10, "f:3")).status();
  EXPECT_EQ(RefusalOf(third), Refusal::kClientShare);
  EXPECT_THAT(third, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("client flood holds 2 passes")));
  // Another client still gets in.
  EXPECT_THAT(AdmitAndWait(a, Req("honest", 400)), IsOk());
  // Memory share: 501 bytes can never fit one client's share of 500.
  EXPECT_EQ(RefusalOf(AdmitAndWait(a, Req("honest", 501)).status()), Refusal::kClientShare);
}

TEST(AdmissionTest, PassesPerConnectionAreBounded) {
  Timers timers;
  Admission a(SmallLimits(), &timers);  // 3 per connection
  std::vector<Admission::Ticket> held;
  for (int i = 0; i < 3; ++i) held.push_back(*a.TryAdmit(Req("x", 1, "conn")));
  absl::Status s = a.TryAdmit(Req("x", 1, "conn")).status();
  EXPECT_EQ(RefusalOf(s), Refusal::kLimits);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_passes_per_connection is 3")));
  EXPECT_EQ(a.connections(), 1);
  EXPECT_THAT(a.TryAdmit(Req("x", 1, "other")), IsOk());
}

TEST(AdmissionTest, ShutdownRefusesWaitersAndNewRequests) {
  Timers timers;
  Admission::Limits l = SmallLimits();
  l.max_wait = absl::Seconds(30);
  Admission a(l, &timers);
  auto big = a.TryAdmit(Req("x", 1000));
  absl::Notification answered;
  absl::Status waiter;
  a.Admit(Req("y", 10), [&](absl::StatusOr<Admission::Ticket> t) {
    waiter = t.status();
    answered.Notify();
  });
  a.Shutdown();
  ASSERT_TRUE(answered.HasBeenNotified());
  EXPECT_THAT(waiter, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  EXPECT_EQ(RefusalOf(waiter), Refusal::kShutdown);
  EXPECT_EQ(RefusalOf(a.TryAdmit(Req("z", 1)).status()), Refusal::kShutdown);
}

TEST(AdmissionTest, ManyThreadsAdmittingAndReleasingLeaveNothingBehind) {
  Timers timers;
  Admission::Limits l = SmallLimits();
  l.max_waiting = 1000;
  l.max_per_connection = 1000;
  l.max_wait = absl::Seconds(10);
  Admission a(l, &timers);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto ticket = AdmitAndWait(a, Req("c" + std::to_string(t % 3), 100 + (i % 5) * 50));
        if (ticket.ok()) ++admitted;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), 1600);  // all waited their turn
  EXPECT_EQ(a.units(), 0);
  EXPECT_EQ(a.bytes(), 0);
  EXPECT_EQ(a.waiting(), 0);
  EXPECT_EQ(a.connections(), 0);
}

}  // namespace
}  // namespace attnroll::runtime
