// The server wiring (server, attnroll_service): what GetServerInfo reports,
// gRPC's own cap on message size, and shutdown.

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using ::testing::HasSubstr;

using testing::IsOk;
using testing::ServerTest;
using testing::ViewOf;

TEST_F(ServerTest, GetServerInfoReportsLimits) {
  auto info = client_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version(), ATTNROLL_VERSION);
  EXPECT_EQ(info->limits().max_tokens(), 1024u);
  EXPECT_EQ(info->limits().workers(), 2u);
  EXPECT_THAT(info->analyses(), ::testing::ElementsAre("rollout", "grad-rollout", "flow", "encoder-decoder", "validate",
                                                        "compare", "audit", "explain-pair", "monitor"));
  EXPECT_EQ(info->limits().max_flow_cost(), 1e11);
  EXPECT_THAT(info->request_forms(), ::testing::ElementsAre("header", "layer", "layers", "whole_pass"));
}

TEST_F(ServerTest, MessageOverMaxMessageBytesIsRefusedByGrpc) {
  // A message over max_message_bytes (1 MiB) is refused by gRPC itself.
  auto a = testing::UniformAttention(1, 1, 3, 300);  // 3 x 300^2 x 4 = 1.08 MB
  std::vector<v1::ExplainRequest> big = {HeaderMsg(testing::RolloutHeader(a)),
                                         LayerMsg(client::LayerChunks(ViewOf(a), 0, v1::DTYPE_FP32, 1 << 30)[0])};
  ASSERT_GT(big[1].ByteSizeLong(), 1u << 20);
  auto r = RawExplain(big);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  // Splitting by head range under the server's cap makes the same pass fit.
  client::ExplainOptions opts;
  opts.max_message_bytes = 1 << 20;
  EXPECT_THAT(client_->Explain(testing::RolloutHeader(a), ViewOf(a), opts), IsOk());
}

TEST_F(ServerTest, ShutdownRefusesNewPasses) {
  server_->Shutdown(absl::Milliseconds(200));
  auto info = client_->GetServerInfo(absl::Seconds(2));
  EXPECT_EQ(info.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ServerTest, ShutdownRefusesNewPassesOnAStreamStillInItsGrace) {
  // A stream open before the shutdown keeps its grace period, but a header
  // arriving on it then opens no pass: UNAVAILABLE in-band.
  auto a = testing::UniformAttention(1, 1, 1, 4);
  auto m = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  auto stream = client_->stub()->ExplainStream(&ctx);
  for (const auto& msg : {StreamMsg("before", m[0]), StreamMsg("before", m[1]), StreamEnd("before")}) {
    ASSERT_TRUE(stream->Write(msg));
  }
  v1::StreamResponse r;
  ASSERT_TRUE(stream->Read(&r));  // the stream is live on the server
  EXPECT_TRUE(r.has_result()) << r.error().message();

  std::thread shutdown([&] { server_->Shutdown(absl::Seconds(20)); });
  // New calls are refused once the shutdown has begun.
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (client_->GetServerInfo(absl::Milliseconds(100)).ok() && absl::Now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_FALSE(client_->GetServerInfo(absl::Milliseconds(100)).ok());
  ASSERT_TRUE(stream->Write(StreamMsg("after", m[0])));
  stream->WritesDone();
  std::map<std::string, v1::StreamResponse> got;
  while (stream->Read(&r)) got[r.request_id()] = r;
  EXPECT_TRUE(stream->Finish().ok());
  shutdown.join();
  ASSERT_EQ(got.count("after"), 1u);
  EXPECT_EQ(got["after"].error().code_name(), "UNAVAILABLE");
  EXPECT_THAT(got["after"].error().message(), HasSubstr("shutting down, not accepting new passes"));
  ExpectMemoryReleased();
}

}  // namespace
}  // namespace attnroll::rpc
