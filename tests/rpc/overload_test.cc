// The server under overload and faults, on loopback, bounded in count and
// time: admission per pass (refused at the header, never mid-stream), idle
// timeouts, one client's flood against another's honest pass, messages that
// do not parse, long work that leaves small passes a worker, draining
// shutdown. Every test asserts numbers, not "no crash".
#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/testutil/metrics_testutil.h"
#include "tests/testutil/raw_call.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using ::testing::AnyOf;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;
using ::testing::StartsWith;
using testing::IsOk;
using testing::MetricValue;
using testing::ServerTest;
using testing::StatusIs;
using testing::UniformAttention;
using testing::UniformRollout;
using testing::ViewOf;

class OverloadTest : public ServerTest {
 protected:
  // The share of work each status got, over `results`.
  static std::map<absl::StatusCode, int> Count(const std::vector<absl::Status>& results) {
    std::map<absl::StatusCode, int> out;
    for (const absl::Status& s : results) ++out[s.code()];
    return out;
  }
};

TEST_F(OverloadTest, AdmissionRefusesTheExcessAtTheHeaderAndCompletesEveryAdmittedPass) {
  // One worker, room for one new pass in the queue and two in flight, no
  // waiting: of 16 concurrent passes some are refused, each at its header
  // (queue or passes); every admitted one completes with the right map.
  runtime::ServerConfig c = Config();
  c.workers = 1;
  c.queue_size = 1;
  c.max_passes_in_flight = 2;
  c.admission_wait_seconds = 0;
  c.client_share = 1;
  StartServer(c);
  const auto a = UniformAttention(1, 4, 2, 64);
  const v1::PassHeader h = testing::RolloutHeader(a);
  std::vector<absl::Status> results(16);
  std::vector<std::vector<float>> maps(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      auto r = client_->Explain(h, ViewOf(a), {});
      results[i] = r.status();
      if (r.ok()) maps[i] = testing::MapValues(r->results(0).maps(0));
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (int i = 0; i < 16; ++i) {
    if (results[i].ok()) {
      ++ok;
      EXPECT_THAT(maps[i], Pointwise(FloatNear(1e-6), UniformRollout(64, 4, 0)));
      continue;
    }
    // Refused at admission: the new-work queue or the passes in flight.
    EXPECT_THAT(results[i], StatusIs(absl::StatusCode::kResourceExhausted,
                                     AnyOf(StartsWith("server: worker queue full"), StartsWith("passes: "))))
        << i;
  }
  EXPECT_GE(ok, 1);
  const double refused = MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "queue"}}) +
                         MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "passes"}});
  EXPECT_EQ(refused, 16 - ok);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_rpcs_total", {{"rpc", "Explain"}, {"code", "OK"}}), ok);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_rpcs_total",
                        {{"rpc", "Explain"}, {"code", "RESOURCE_EXHAUSTED"}}),
            16 - ok);
  ExpectMemoryReleased();

  // With room to wait, the same burst is served completely by one worker.
  c.queue_size = 64;
  c.max_passes_in_flight = 64;
  StartServer(c);
  threads.clear();
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] { results[i] = client_->Explain(h, ViewOf(a), {}).status(); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(Count(results)[absl::StatusCode::kOk], 16);
}

TEST_F(OverloadTest, AStalledPassIsEndedByTheIdleTimeoutAndItsMemoryFreed) {
  runtime::ServerConfig c = Config();
  c.idle_timeout_seconds = 0.3;
  StartServer(c);
  const auto a = UniformAttention(1, 3, 2, 64);
  const auto msgs = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  v1::ExplainResponse response;
  auto writer = client_->stub()->Explain(&ctx, &response);
  ASSERT_TRUE(writer->Write(msgs[0]));
  ASSERT_TRUE(writer->Write(msgs[1]));
  // A write returns once buffered: wait for the pass to be open (admitted,
  // its memory reserved) before watching it go.
  const absl::Time open_by = absl::Now() + absl::Seconds(5);
  while (server_->passes_in_flight() == 0 && absl::Now() < open_by) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(server_->passes_in_flight(), 1);
  EXPECT_GT(server_->memory_reserved(), 0);
  // The client stalls: the server ends the pass on its own and frees it.
  ExpectMemoryReleased(absl::Seconds(5));
  EXPECT_FALSE(writer->Finish().ok());
  // The client's Finish returns when the server cancels the call, which
  // records it a moment later.
  auto idle_calls = [&] {
    return MetricValue(server_->metrics(), "attnroll_rpcs_total", {{"rpc", "Explain"}, {"code", "DEADLINE_EXCEEDED"}});
  };
  auto idle_refusals = [&] {
    return MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "idle"}});
  };
  const absl::Time recorded_by = absl::Now() + absl::Seconds(5);
  while ((idle_calls() == 0 || idle_refusals() == 0) && absl::Now() < recorded_by) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(idle_calls(), 1);
  EXPECT_EQ(idle_refusals(), 1);
  EXPECT_EQ(server_->passes_in_flight(), 0);
}

TEST_F(OverloadTest, OneClientFloodingHeadersCannotMakeAnotherClientsPassFail) {
  // Two client identities on loopback: 127.0.0.1 and [::1]. The flooder
  // opens 20 streams, each sending a header and then nothing; it may hold at
  // most half of the 8 passes in flight. The honest client's pass goes
  // through meanwhile, and the stalled streams are ended by the idle timeout.
  runtime::ServerConfig c = Config();
  c.listen = {"127.0.0.1:0", "[::1]:0"};
  c.max_passes_in_flight = 8;
  c.client_share = 0.5;
  c.admission_wait_seconds = 0.05;
  c.idle_timeout_seconds = 1.0;
  c.stream_idle_timeout_seconds = 1.0;
  auto started = Server::Start(c);
  if (!started.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << started.status();
  server_ = std::move(*started);
  auto flooder = client::Client::Connect(absl::StrCat("127.0.0.1:", server_->ports()[0]));
  auto honest = client::Client::Connect(absl::StrCat("[::1]:", server_->ports()[1]));
  const auto big = UniformAttention(1, 2, 2, 128);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>>> streams;
  for (int i = 0; i < 20; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(flooder->stub()->ExplainStream(contexts.back().get()));
    streams.back()->Write(StreamMsg("flood", HeaderMsg(testing::RolloutHeader(big))));
  }
  // Give the floods time to be admitted or refused.
  const absl::Time until = absl::Now() + absl::Seconds(2);
  while (server_->passes_in_flight() < 4 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(server_->passes_in_flight(), 4);  // the flooder's share, no more
  const auto a = UniformAttention(1, 3, 2, 16);
  auto r = honest->Explain(testing::RolloutHeader(a), ViewOf(a), {});
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(testing::MapValues(r->results(0).maps(0)), Pointwise(FloatNear(1e-6), UniformRollout(16, 3, 0)));
  // The other 16 headers were refused: over the flooder's share (after the
  // admission wait), or at the full queue of new work.
  auto refused = [&] {
    return MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "client_share"}}) +
           MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "queue"}});
  };
  const absl::Time wait = absl::Now() + absl::Seconds(2);
  while (refused() < 16 && absl::Now() < wait) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(refused(), 16);
  EXPECT_GE(MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "client_share"}}), 1);
  // The stalled streams are timed out and their memory freed.
  ExpectMemoryReleased(absl::Seconds(5));
  for (size_t i = 0; i < streams.size(); ++i) {
    contexts[i]->TryCancel();
    streams[i]->Finish();
  }
  EXPECT_GE(MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "idle"}}), 4);
}

TEST_F(OverloadTest, AMessageThatDoesNotParseIsInvalidArgumentNeverAHalfClose) {
  const auto a = UniformAttention(1, 3, 2, 8);
  const auto msgs = Pass(a, testing::RolloutHeader(a));
  std::vector<std::string> raw;
  for (int i = 0; i < 3; ++i) raw.push_back(msgs[i].SerializeAsString());  // header, 2 layers
  raw.push_back(std::string("\xff\xff\xff\xff garbage", 12));
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::InsecureChannelCredentials());
  grpc::Status s = testing::RawCall(channel, "/attnroll.v1.AttnrollService/Explain", raw);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("message 4: expected a ExplainRequest, got 12 bytes"));
  // The same on the multiplexed stream: the stream ends, it does not pretend.
  s = testing::RawCall(channel, "/attnroll.v1.AttnrollService/ExplainStream",
                       {StreamMsg("p", msgs[0]).SerializeAsString(), std::string("\x08\xff", 2)});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("message 2: expected a StreamRequest"));
  ExpectMemoryReleased();
}

TEST_F(OverloadTest, AFlowPassLeavesAWorkerForSmallPasses) {
  // Two workers, one of them for long work: while a flow pass computes its
  // max flows, small passes are served; every one of them finishes before
  // the flow pass does. (Room for the flow's solvers: with several output
  // rows each worker's budget includes the split certificate's.)
  runtime::ServerConfig c = Config();
  c.max_memory_bytes = 256 << 20;
  StartServer(c);
  std::mt19937 rng(5);
  const auto big = testing::MakeAttention(1, 12, 2, 160, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(160, rng, 3.0f);
  });
  v1::PassHeader h = testing::RolloutHeader(big, "flow");
  v1::FlowOptions* flow = h.mutable_analyses(0)->mutable_flow();
  for (int r = 0; r < 24; ++r) flow->mutable_readout()->add_rows(r);
  absl::Notification flow_running, flow_done;
  std::atomic<absl::Time*> flow_end{nullptr};
  absl::Time flow_finished;
  std::thread flow_thread([&] {
    client::ExplainOptions opts;
    auto r = client_->ExplainWithProgress(h, ViewOf(big), opts, [&](const v1::Progress&) {
      if (!flow_running.HasBeenNotified()) flow_running.Notify();
    });
    flow_finished = absl::Now();
    EXPECT_THAT(r, IsOk());
    flow_done.Notify();
  });
  ASSERT_TRUE(flow_running.WaitForNotificationWithTimeout(absl::Seconds(30)));
  const auto small = UniformAttention(1, 3, 2, 16);
  std::vector<absl::Time> small_done;
  for (int i = 0; i < 10 && !flow_done.HasBeenNotified(); ++i) {
    auto r = client_->Explain(testing::RolloutHeader(small), ViewOf(small), {});
    ASSERT_THAT(r, IsOk());
    small_done.push_back(absl::Now());
  }
  flow_thread.join();
  ASSERT_EQ(small_done.size(), 10u) << "the flow pass ended before 10 small passes: make it longer";
  for (absl::Time t : small_done) EXPECT_LT(t, flow_finished);
  (void)flow_end;
}

TEST_F(OverloadTest, ShutdownSaysNotServingDrainsPassesInFlightAndRefusesNewOnes) {
  const auto a = UniformAttention(1, 3, 2, 16);
  const auto msgs = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  v1::ExplainResponse response;
  auto writer = client_->stub()->Explain(&ctx, &response);
  ASSERT_TRUE(writer->Write(msgs[0]));
  ASSERT_TRUE(writer->Write(msgs[1]));
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (server_->passes_in_flight() == 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(server_->passes_in_flight(), 1);
  std::thread shutdown([&] { server_->Shutdown(absl::Seconds(10)); });
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  // The port stays open during the grace period: health answers NOT_SERVING.
  grpc::health::v1::HealthCheckResponse status;
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext hc;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("attnroll.v1.AttnrollService");
    ASSERT_TRUE(health->Check(&hc, req, &status).ok());
    if (status.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  // ... as the client library (and `attnroll health`, the containers' probe) sees it.
  for (const std::string service : {"", "attnroll.v1.AttnrollService"}) {
    absl::StatusOr<client::Client::ServingStatus> seen = client_->CheckHealth(service);
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(*seen, grpc::health::v1::HealthCheckResponse::NOT_SERVING) << service;
  }
  // A new pass is refused as retryable.
  EXPECT_THAT(client_->Explain(testing::RolloutHeader(a), ViewOf(a), {}),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  // The pass in flight finishes within the grace.
  ASSERT_TRUE(writer->Write(msgs[2]));
  ASSERT_TRUE(writer->Write(msgs[3]));
  writer->WritesDone();
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_THAT(testing::MapValues(response.results(0).maps(0)), Pointwise(FloatNear(1e-6), UniformRollout(16, 3, 0)));
  shutdown.join();
  EXPECT_EQ(server_->passes_in_flight(), 0);
}

}  // namespace
}  // namespace attnroll::rpc
