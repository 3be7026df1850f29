// The ExplainStream RPC (stream_reactor): many passes multiplexed on one
// bidirectional stream, failures reported in-band per pass, progress of long
// analyses, and the per-stream limit on open passes.

#include <map>
#include <random>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"

namespace attnroll::rpc {
namespace {

using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

using testing::ServerTest;
using testing::UniformRollout;
using testing::ViewOf;

// What one ExplainStream call answered: the request ids in reply order, and
// each id's last reply.
struct StreamReplies {
  std::vector<std::string> order;
  std::map<std::string, v1::StreamResponse> last;
};

// Writes `msgs` on one ExplainStream (from another thread), half-closes, reads
// every reply; the call must end OK.
StreamReplies RunStream(v1::AttnrollService::Stub* stub, const std::vector<v1::StreamRequest>& msgs) {
  grpc::ClientContext ctx;
  auto stream = stub->ExplainStream(&ctx);
  std::thread writer([&] {
    for (const auto& m : msgs) stream->Write(m);
    stream->WritesDone();
  });
  StreamReplies replies;
  v1::StreamResponse r;
  while (stream->Read(&r)) {
    replies.order.push_back(r.request_id());
    replies.last[r.request_id()] = r;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  return replies;
}

TEST_F(ServerTest, FlowReportsProgressOnTheStreamAndMatchesExplain) {
  std::mt19937 rng(3);
  auto a = testing::MakeAttention(1, 3, 2, 12, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(12, rng, 3.0f);
  });
  v1::PassHeader h = testing::RolloutHeader(a);
  v1::FlowOptions* flow = h.mutable_analyses(0)->mutable_flow();
  flow->set_all_rows(true);
  std::vector<v1::Progress> progress;
  auto streamed = client_->ExplainWithProgress(h, ViewOf(a), {}, [&](const v1::Progress& p) {
    progress.push_back(p);
  });
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_FALSE(progress.empty());
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_GT(progress[i].done(), progress[i - 1].done());
  EXPECT_EQ(progress.back().done(), 144u);  // 12 output x 12 input tokens
  EXPECT_EQ(progress.back().total(), 144u);
  EXPECT_LE(progress.size(), 101u);
  auto unary = client_->Explain(h, ViewOf(a), {});
  ASSERT_TRUE(unary.ok()) << unary.status();
  EXPECT_EQ(streamed->results(0).path(), "flow");
  EXPECT_THAT(streamed->results(0).maps(0).shape(), ::testing::ElementsAre(12, 12));
  EXPECT_EQ(testing::MapValues(streamed->results(0).maps(0)), testing::MapValues(unary->results(0).maps(0)));
  // Each row is normalised: sums to 1.
  const std::vector<float> maps = testing::MapValues(unary->results(0).maps(0));
  for (int r = 0; r < 12; ++r) {
    float sum = 0;
    for (int j = 0; j < 12; ++j) sum += maps[r * 12 + j];
    EXPECT_NEAR(sum, 1.0f, 1e-5);
  }
}

TEST_F(ServerTest, ExplainStreamMultiplexesAndReportsFailuresInBand) {
  auto a = testing::UniformAttention(1, 2, 2, 4);
  auto b = testing::UniformAttention(1, 3, 2, 8);
  auto ma = Pass(a, testing::RolloutHeader(a));
  auto mb = Pass(b, testing::RolloutHeader(b));
  auto bad = ma;
  reinterpret_cast<float*>(bad[1].mutable_layer()->mutable_attention()->mutable_data()->data())[0] = -1;

  // Interleave: A header, B header, X header, A l0, X bad l0, B l0, A l1, X l1 (dropped),
  // B l1, B l2, A end, X end, B end; then an empty id, an unknown id, a 300-byte id.
  const StreamReplies replies = RunStream(
      client_->stub(),
      {StreamMsg("a", ma[0]), StreamMsg("b", mb[0]), StreamMsg("x", bad[0]), StreamMsg("a", ma[1]),
       StreamMsg("x", bad[1]), StreamMsg("b", mb[1]), StreamMsg("a", ma[2]), StreamMsg("x", bad[2]),
       StreamMsg("b", mb[2]), StreamMsg("b", mb[3]), StreamEnd("a"), StreamEnd("x"), StreamEnd("b"),
       StreamMsg("", ma[0]), StreamMsg("ghost", ma[1]), StreamMsg(std::string(300, 'z'), ma[0])});
  const std::vector<std::string>& order = replies.order;
  std::map<std::string, v1::StreamResponse> got = replies.last;
  // x fails at its bad layer, before a and b finish; its later messages are dropped.
  EXPECT_THAT(order, ::testing::ElementsAre("x", "a", "b", "", "ghost", std::string(256, 'z')));
  ASSERT_TRUE(got["a"].has_result());
  EXPECT_THAT(testing::MapValues(got["a"].result().results(0).maps(0)),
              Pointwise(FloatNear(1e-6), UniformRollout(4, 2, 0)));
  ASSERT_TRUE(got["b"].has_result());
  EXPECT_THAT(testing::MapValues(got["b"].result().results(0).maps(0)),
              Pointwise(FloatNear(1e-6), UniformRollout(8, 3, 0)));
  ASSERT_TRUE(got["x"].has_error());
  EXPECT_EQ(got["x"].error().code_name(), "INVALID_ARGUMENT");
  EXPECT_THAT(got["x"].error().message(), HasSubstr("expected probabilities >= 0"));
  EXPECT_THAT(got[""].error().message(), HasSubstr("request_id: expected a non-empty id"));
  EXPECT_THAT(got["ghost"].error().message(), HasSubstr("no open pass 'ghost'"));
  EXPECT_THAT(got[std::string(256, 'z')].error().message(),
              HasSubstr("request_id: expected at most 256 bytes, got 300"));
}

TEST_F(ServerTest, ExplainStreamTakesLayersInOneMessageAndFailsThemInBand) {
  auto a = testing::UniformAttention(1, 3, 2, 4);
  auto ma = Pass(a, testing::RolloutHeader(a));  // header, layers 0..2
  auto bad = ma;
  reinterpret_cast<float*>(bad[2].mutable_layer()->mutable_attention()->mutable_data()->data())[0] = -1;
  auto batch = [](const std::string& id, const std::vector<v1::ExplainRequest>& m, std::vector<int> idx) {
    v1::StreamRequest r;
    r.set_request_id(id);
    r.mutable_layers();  // set, even when empty
    for (int i : idx) *r.mutable_layers()->add_layers() = m[i].layer();
    return r;
  };
  // a: every layer in one message. x: its bad layer 1 in the middle of a batch, then a batch
  // after its failure (dropped). e: an empty batch. n: a batch before any header.
  const StreamReplies replies = RunStream(
      client_->stub(),
      {StreamMsg("a", ma[0]), StreamMsg("x", bad[0]), batch("a", ma, {1, 2, 3}),
       batch("x", bad, {1, 2, 3}), batch("x", bad, {1}), StreamMsg("e", ma[0]), batch("e", ma, {}),
       batch("n", ma, {1}), StreamEnd("a"), StreamEnd("x")});
  const std::vector<std::string>& order = replies.order;
  std::map<std::string, v1::StreamResponse> got = replies.last;
  EXPECT_THAT(order, ::testing::UnorderedElementsAre("a", "x", "e", "n"));
  ASSERT_TRUE(got["a"].has_result()) << got["a"].DebugString();
  EXPECT_THAT(testing::MapValues(got["a"].result().results(0).maps(0)),
              Pointwise(FloatNear(1e-6), UniformRollout(4, 3, 0)));
  ASSERT_TRUE(got["x"].has_error());
  EXPECT_THAT(got["x"].error().message(),
              HasSubstr("attention (layer 1, head 0, sequence 0, row 0): expected probabilities >= 0"));
  EXPECT_THAT(got["e"].error().message(), HasSubstr("expected at least one layer message, got none"));
  EXPECT_THAT(got["n"].error().message(), HasSubstr("no open pass 'n': send its header first"));
  ExpectMemoryReleased();
}

TEST_F(ServerTest, ExplainStreamLimitsOpenPassesAndAbandonsUnendedOnes) {
  auto a = testing::UniformAttention(1, 1, 1, 4);
  auto m = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext ctx;
  auto stream = client_->stub()->ExplainStream(&ctx);
  for (const char* id : {"p1", "p2", "p3", "p4"}) ASSERT_TRUE(stream->Write(StreamMsg(id, m[0])));
  stream->WritesDone();
  std::map<std::string, v1::PassError> errors;
  v1::StreamResponse r;
  while (stream->Read(&r)) errors[r.request_id()] = r.error();
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_EQ(errors["p4"].code_name(), "RESOURCE_EXHAUSTED");
  EXPECT_THAT(errors["p4"].message(), HasSubstr("max_passes_per_stream is 3"));
  EXPECT_THAT(errors["p1"].message(), HasSubstr("closed before this pass's PassEnd"));
  ExpectMemoryReleased();
}

}  // namespace
}  // namespace attnroll::rpc
