// The client library's streams (AuditStream, PassStream), prepared passes
// (PreparedPass) and health checks against an in-process server
// (testutil/server_fixture.h):
// items and passes go out through the library only, results come back per
// item or per pass, in-band errors with their ids, call errors from Finish.
#include "client/cpp/attnroll_client.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/testutil/server_fixture.h"

namespace attnroll::client {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::Pointwise;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

using testing::ServerTest;
using testing::ViewOf;

// Results handed over by the reader thread.
class Collected {
 public:
  void Add(const v1::AuditItemResult& r) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push_back(r);
  }
  std::vector<v1::AuditItemResult> Items() {
    std::lock_guard<std::mutex> lock(mu_);
    return items_;
  }

 private:
  std::mutex mu_;
  std::vector<v1::AuditItemResult> items_;
};

// n positive values, their mass on the left (or right) half.
std::vector<float> HalfMap(int n, bool right, float offset) {
  std::vector<float> m(n, 0.01f);
  for (int i = 0; i < n; ++i) {
    if ((2 * i >= n) == right) m[i] = 1.0f + offset * i;
  }
  return m;
}

v1::Tensor Fp32(const std::vector<float>& values) {
  v1::Tensor t;
  t.set_dtype(v1::DTYPE_FP32);
  t.add_shape(static_cast<int64_t>(values.size()));
  t.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  return t;
}

TEST_F(ServerTest, CheckHealthAnswersForTheServerAndTheApiAndNamesUnknownServices) {
  for (const std::string service : {"", "attnroll.v1.AttnrollService"}) {
    absl::StatusOr<Client::ServingStatus> status = client_->CheckHealth(service);
    ASSERT_TRUE(status.ok()) << service << ": " << status.status();
    EXPECT_EQ(*status, grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  absl::StatusOr<Client::ServingStatus> unknown = client_->CheckHealth("no.such.Service");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();
  // Nothing listening: UNAVAILABLE (a call waiting for the server to come up
  // would end DEADLINE_EXCEEDED instead).
  const int port = server_->port();
  server_.reset();
  auto gone = Client::Connect("127.0.0.1:" + std::to_string(port))->CheckHealth("", absl::Seconds(30));
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable) << gone.status();
}

// Two servers behind one static-list target: round_robin alternates the
// passes strictly between them (CallStats::peer names each one), and once one
// is gone every pass goes to the other.
TEST_F(ServerTest, RoundRobinAlternatesPassesOverAStaticListAndSkipsAServerThatIsGone) {
  absl::StatusOr<std::unique_ptr<rpc::Server>> second = rpc::Server::Start(Config());
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string a = "ipv4:127.0.0.1:" + std::to_string(server_->port());
  const std::string b = "ipv4:127.0.0.1:" + std::to_string((*second)->port());
  ConnectOptions options;
  options.lb = LbPolicy::kRoundRobin;
  absl::StatusOr<std::unique_ptr<Client>> pool = Client::Connect(
      "ipv4:127.0.0.1:" + std::to_string(server_->port()) + ",127.0.0.1:" +
          std::to_string((*second)->port()),
      options);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->pass_attempts(), 3);
  const testing::Attention att = testing::UniformAttention(1, 2, 2, 5);
  // A pass sent just as a server stops may be retried (by gRPC, or sent
  // again); while both serve, every pass is sent once.
  bool both_serve = true;
  auto explain = [&]() {
    CallStats stats;
    absl::StatusOr<v1::ExplainResponse> r =
        (*pool)->Explain(testing::RolloutHeader(att), ViewOf(att), {}, &stats);
    EXPECT_TRUE(r.ok()) << r.status();
    if (both_serve) {
      EXPECT_EQ(stats.sends, 1);
    }
    return stats.peer;
  };
  // Until both connections are up (round_robin picks among ready ones).
  std::set<std::string> seen;
  for (int i = 0; i < 200 && seen.size() < 2; ++i) seen.insert(explain());
  ASSERT_EQ(seen, (std::set<std::string>{a, b}));
  std::string last = explain();
  std::map<std::string, int> count;
  for (int i = 0; i < 10; ++i) {
    const std::string peer = explain();
    EXPECT_NE(peer, last) << "pass " << i << " went to the same server twice in a row";
    ++count[peer];
    last = peer;
  }
  EXPECT_EQ(count, (std::map<std::string, int>{{a, 5}, {b, 5}}));
  second->reset();  // drains and stops
  both_serve = false;
  for (int i = 0; i < 4; ++i) EXPECT_EQ(explain(), a) << i;
}

TEST_F(ServerTest, AuditStreamTakesMapAndAttentionItemsAndAnswersEachById) {
  std::mt19937 rng(5);
  auto random = [&](int64_t, int64_t, int64_t) { return testing::RandomStochastic(10, rng, 2.0f); };
  const testing::Attention base_same = testing::MakeAttention(1, 2, 2, 10, random);
  const testing::Attention base = testing::MakeAttention(1, 2, 2, 10, random);
  const testing::Attention cand = testing::MakeAttention(1, 2, 2, 10, random);
  v1::PassHeader pass;  // layout filled from the views
  pass.mutable_layout()->set_prefix_tokens(1);
  pass.add_analyses()->mutable_rollout();
  ExplainOptions one_head_per_message;
  one_head_per_message.max_message_bytes = 1024 + 10 * 10 * 4;

  v1::AuditHeader header;
  header.set_map_length(9);
  header.mutable_thresholds()->set_max_l1(1e-6);
  Collected collected;
  AuditOptions options;
  options.on_item = [&](const v1::AuditItemResult& r) { collected.Add(r); };
  std::unique_ptr<AuditStream> audit = client_->Audit(header, options);

  const std::vector<float> left = HalfMap(9, false, 0.1f);
  EXPECT_TRUE(audit->AddMaps("map-same", "", absl::MakeConstSpan(left), absl::MakeConstSpan(left)).ok());
  EXPECT_TRUE(audit->AddMaps("map-shift", "night", Fp32(left), Fp32(HalfMap(9, true, 0.2f))).ok());
  EXPECT_TRUE(audit->AddPasses("att-same", "", pass, ViewOf(base_same), ViewOf(base_same)).ok());
  EXPECT_TRUE(
      audit->AddPasses("att-diff", "night", pass, ViewOf(base), ViewOf(cand), one_head_per_message).ok());
  // Refused here, before anything is sent: the stream goes on.
  const testing::Attention other = testing::MakeAttention(1, 3, 2, 10, random);
  absl::Status local = audit->AddPasses("att-shapes", "", pass, ViewOf(base), ViewOf(other));
  EXPECT_EQ(local.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(local.message()),
              HasSubstr("item att-shapes: candidate: expected the baseline's shape [B, L, H, rows, n] = "
                        "[1, 2, 2, 10, 10], got [1, 3, 2, 10, 10]"));
  // Refused by the server, in-band: a map of the wrong length, a repeated id.
  const std::vector<float> short_map(5, 1.0f);
  EXPECT_TRUE(audit->AddMaps("bad-length", "", absl::MakeConstSpan(short_map),
                             absl::MakeConstSpan(short_map))
                  .ok());
  EXPECT_TRUE(audit->AddMaps("map-same", "", absl::MakeConstSpan(left), absl::MakeConstSpan(left)).ok());
  absl::StatusOr<v1::AuditReport> report = audit->Finish();
  ASSERT_TRUE(report.ok()) << report.status();

  std::map<std::string, v1::AuditItemResult> ok;
  std::vector<std::string> refused;
  for (const v1::AuditItemResult& r : collected.Items()) {
    if (r.has_error()) {
      refused.push_back(r.id());
      EXPECT_EQ(FromPassError(r.error()).code(), absl::StatusCode::kInvalidArgument) << r.id();
    } else {
      ok[r.id()] = r;
    }
  }
  EXPECT_THAT(refused, UnorderedElementsAre("bad-length", "map-same"));
  ASSERT_EQ(ok.size(), 4u);
  EXPECT_THAT(ok["map-same"].drift_flags(), ElementsAre());
  EXPECT_EQ(ok["map-same"].comparison().l1(), 0.0);
  EXPECT_THAT(ok["map-shift"].drift_flags(), ElementsAre("max_l1"));
  EXPECT_EQ(ok["att-same"].comparison().l1(), 0.0);
  EXPECT_THAT(ok["att-diff"].drift_flags(), ElementsAre("max_l1"));
  EXPECT_EQ(report->overall().items(), 4);
  EXPECT_EQ(report->overall().drifted(), 2);
  ASSERT_EQ(report->groups_size(), 1);
  EXPECT_EQ(report->groups(0).group(), "night");
  EXPECT_EQ(report->groups(0).items(), 2);

  // The attention item's maps are those Explain gives for each side.
  auto explained_map = [&](const testing::Attention& a) {
    absl::StatusOr<v1::ExplainResponse> r = client_->Explain(pass, ViewOf(a));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->results(0).maps(0) : v1::Tensor();
  };
  v1::CompareRequest compare;
  *compare.mutable_a() = explained_map(base);
  *compare.mutable_b() = explained_map(cand);
  absl::StatusOr<v1::CompareResponse> direct = client_->Compare(compare);
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_EQ(ok["att-diff"].comparison().l1(), direct->comparisons(0).l1());
  EXPECT_EQ(ok["att-diff"].comparison().js_divergence(), direct->comparisons(0).js_divergence());
  ExpectMemoryReleased();
}

TEST_F(ServerTest, AuditStreamWritesManyItemsWithoutTheCallerReading) {
  // The server stops reading while results wait for the client; the
  // stream's own reader keeps them flowing while this thread only writes.
  v1::AuditHeader header;
  header.set_map_length(64);
  std::atomic<int> seen{0};
  AuditOptions options;
  options.on_item = [&](const v1::AuditItemResult&) { ++seen; };
  std::unique_ptr<AuditStream> audit = client_->Audit(header, options);
  for (int i = 0; i < 2000; ++i) {
    const std::vector<float> a = HalfMap(64, false, 0.001f * i), b = HalfMap(64, true, 0.01f);
    ASSERT_TRUE(audit->AddMaps(absl::StrCat("i", i), "", absl::MakeConstSpan(a), absl::MakeConstSpan(b)).ok());
  }
  absl::StatusOr<v1::AuditReport> report = audit->Finish();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(seen.load(), 2000);
  EXPECT_EQ(report->overall().items(), 2000);
}

TEST_F(ServerTest, AuditStreamReportsCallErrorsFromFinish) {
  v1::AuditHeader no_length;  // neither map_length nor a grid
  std::unique_ptr<AuditStream> audit = client_->Audit(no_length);
  absl::StatusOr<v1::AuditReport> report = audit->Finish();
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument) << report.status();
  const std::vector<float> m(4, 1.0f);
  absl::Status after = audit->AddMaps("late", "", absl::MakeConstSpan(m), absl::MakeConstSpan(m));
  EXPECT_EQ(after.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(after.message()), HasSubstr("the Audit call has ended"));

  v1::AuditHeader header;
  header.set_map_length(4);
  std::unique_ptr<AuditStream> cancelled = client_->Audit(header);
  cancelled->Cancel();
  EXPECT_EQ(cancelled->Finish().status().code(), absl::StatusCode::kCancelled);

  // Dropped unfinished: the call is cancelled and nothing is left behind.
  { std::unique_ptr<AuditStream> dropped = client_->Audit(header); }
  ExpectMemoryReleased();
}

TEST_F(ServerTest, PassStreamMultiplexesPassesAndReportsErrorsInBand) {
  const testing::Attention a = testing::UniformAttention(1, 2, 2, 4);
  const testing::Attention b = testing::UniformAttention(1, 3, 2, 8);
  const testing::Attention c = testing::UniformAttention(1, 1, 3, 6);
  testing::Attention bad = a;
  bad.values[0] = -1.0f;

  std::mutex mu;
  std::map<std::string, absl::StatusOr<v1::ExplainResponse>> results;
  std::vector<std::string> order;
  PassStreamOptions options;
  options.on_result = [&](const std::string& id, absl::StatusOr<v1::ExplainResponse> r) {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(id);
    results.emplace(id, std::move(r));
  };
  std::unique_ptr<PassStream> stream = client_->ExplainStream(options);
  // b goes out layer by layer around the whole passes a, x and c.
  const v1::PassHeader hb = testing::RolloutHeader(b, "ignored");
  ASSERT_TRUE(stream->BeginPass("b", hb).ok());
  auto layer_of_b = [&](int l) {
    AttentionView v = ViewOf(b);
    v.data = b.values.data() + l * b.heads * b.tokens * b.tokens;
    v.layers = 1;
    return v;
  };
  ASSERT_TRUE(stream->AddLayer("b", 0, layer_of_b(0)).ok());
  CallStats stats;
  ASSERT_TRUE(stream->AddPass("a", testing::RolloutHeader(a), ViewOf(a), {}, &stats).ok());
  EXPECT_EQ(stats.messages_sent, 1 + 1);  // the header, and its 2 fused layers in one LayerBatch
  ASSERT_TRUE(stream->AddLayer("b", 1, layer_of_b(1)).ok());
  ExplainOptions every_head;  // so the server, not the client's fusion, finds the bad value
  every_head.client_fusion = ClientFusion::kOff;
  ASSERT_TRUE(stream->AddPass("x", testing::RolloutHeader(bad), ViewOf(bad), every_head).ok());
  ASSERT_TRUE(stream->AddLayer("b", 2, layer_of_b(2)).ok());
  EXPECT_EQ(stream->AddLayer("b", 3, ViewOf(b)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(stream->EndPass("b").ok());
  ASSERT_TRUE(stream->AddPass("c", testing::RolloutHeader(c), ViewOf(c)).ok());
  ASSERT_TRUE(stream->Finish().ok());

  // Passes complete in the order of their ends; x failed at its first layer.
  EXPECT_THAT(order, ElementsAre("a", "x", "b", "c"));
  for (const auto& [id, attention] :
       std::vector<std::pair<std::string, const testing::Attention*>>{{"a", &a}, {"b", &b}, {"c", &c}}) {
    ASSERT_TRUE(results.at(id).ok()) << id << ": " << results.at(id).status();
    EXPECT_EQ(results.at(id)->request_id(), id);
    absl::StatusOr<v1::ExplainResponse> alone =
        client_->Explain(testing::RolloutHeader(*attention), ViewOf(*attention));
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ(testing::MapValues(results.at(id)->results(0).maps(0)),
              testing::MapValues(alone->results(0).maps(0)))
        << id;
  }
  EXPECT_EQ(results.at("x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(results.at("x").status().message()), HasSubstr("expected probabilities >= 0"));
  ExpectMemoryReleased();
}

// A random [B, L, H, n, n] attention for the prepared-pass tests.
testing::Attention RandomAttention(int64_t batch, int64_t layers, int64_t heads, int64_t tokens,
                                   unsigned seed) {
  std::mt19937 rng(seed);
  return testing::MakeAttention(batch, layers, heads, tokens, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(static_cast<int>(tokens), rng, 2.0f);
  });
}

TEST_F(ServerTest, FusedLayersGoSeveralPerMessageWithinTheMessageCap) {
  const testing::Attention a = RandomAttention(1, 12, 4, 40, 12);  // 6.4 KB per fused layer
  v1::PassHeader header;
  header.add_analyses()->mutable_rollout()->mutable_readout()->add_rows(2);
  ExplainOptions every_head;
  every_head.client_fusion = ClientFusion::kOff;
  absl::StatusOr<v1::ExplainResponse> want = client_->Explain(header, ViewOf(a), every_head);
  ASSERT_TRUE(want.ok()) << want.status();
  // Default cap: the 12 fused layers in one LayerBatch; a 21 KiB cap (less room for the
  // request's own fields and each entry's framing): 3 per message.
  for (const auto& [cap, messages] : std::vector<std::pair<int64_t, int>>{{int64_t{4} << 20, 1 + 1},
                                                                          {21 * 1024, 1 + 4}}) {
    ExplainOptions options;
    options.max_message_bytes = cap;
    CallStats stats;
    absl::StatusOr<v1::ExplainResponse> r = client_->Explain(header, ViewOf(a), options, &stats);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(stats.heads_fused_on_client);
    EXPECT_EQ(stats.messages_sent, messages) << "cap " << cap;
    EXPECT_EQ(stats.bytes_sent, 12 * 40 * 40 * 4);
    EXPECT_THAT(testing::MapValues(r->results(0).maps(0)),
                Pointwise(FloatNear(1e-6), testing::MapValues(want->results(0).maps(0))));
  }
}

TEST_F(ServerTest, PreparedPassHoldsTheMessagesExplainSendsAndGivesTheSameMaps) {
  const testing::Attention a = RandomAttention(2, 3, 4, 12, 11);
  ExplainOptions options;
  options.client_fusion = ClientFusion::kOff;  // every head, split by head range
  options.wire = v1::DTYPE_FP16;
  options.max_message_bytes = 1024 + 2 * 2 * 12 * 12 * 2;  // two heads per message
  v1::PassHeader header;  // layout filled from the view
  header.set_request_id("prepared");
  header.add_analyses()->mutable_rollout()->mutable_readout()->add_rows(3);
  const PreparedPass pass(header, ViewOf(a), options);

  EXPECT_EQ(pass.header().layout().num_layers(), 3u);
  EXPECT_EQ(pass.header().layout().num_heads(), 4u);
  EXPECT_EQ(pass.header().layout().num_tokens(), 12u);
  EXPECT_EQ(pass.header().layout().batch_size(), 2u);
  ASSERT_EQ(pass.chunks().size(), 3u * 2u);
  for (int l = 0; l < 3; ++l) {
    const std::vector<v1::LayerChunk> expected =
        LayerChunks(ViewOf(a), l, options.wire, options.max_message_bytes);
    ASSERT_EQ(expected.size(), 2u);
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(pass.chunks()[2 * l + k].SerializeAsString(), expected[k].SerializeAsString())
          << "layer " << l << ", message " << k;
    }
  }
  EXPECT_EQ(pass.messages(), 1 + 6);
  EXPECT_EQ(pass.tensor_bytes(), 2 * 3 * 4 * 12 * 12 * 2);

  absl::StatusOr<v1::ExplainResponse> direct = client_->Explain(header, ViewOf(a), options);
  ASSERT_TRUE(direct.ok()) << direct.status();
  CallStats stats;
  absl::StatusOr<v1::ExplainResponse> prepared = client_->Explain(pass, absl::Seconds(20), &stats);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->request_id(), "prepared");
  EXPECT_EQ(stats.messages_sent, pass.messages());
  EXPECT_EQ(stats.bytes_sent, pass.tensor_bytes());
  ASSERT_EQ(prepared->results(0).maps_size(), 2);
  for (int b = 0; b < 2; ++b) {
    EXPECT_EQ(testing::MapValues(prepared->results(0).maps(b)),
              testing::MapValues(direct->results(0).maps(b)))
        << "sequence " << b;
  }
  // Sending lends the messages and takes them back: the pass is unchanged.
  EXPECT_EQ(pass.chunks()[0].SerializeAsString(),
            LayerChunks(ViewOf(a), 0, options.wire, options.max_message_bytes)[0].SerializeAsString());
  ExpectMemoryReleased();
}

TEST_F(ServerTest, PreparedPassFromChunksIsSentAsGivenFromManyThreadsAtOnce) {
  const testing::Attention a = RandomAttention(1, 4, 3, 10, 12);
  std::vector<v1::LayerChunk> chunks;
  for (int l = 0; l < a.layers; ++l) {
    for (v1::LayerChunk& c : testing::ChunksOf(a, l, 1)) chunks.push_back(std::move(c));
  }
  const PreparedPass pass(testing::RolloutHeader(a), std::move(chunks));
  EXPECT_EQ(pass.messages(), 1 + 4 * 3);
  EXPECT_EQ(pass.tensor_bytes(), 4 * 3 * 10 * 10 * 4);
  ExplainOptions every_head;  // as the chunks are: bit-identical maps
  every_head.client_fusion = ClientFusion::kOff;
  absl::StatusOr<v1::ExplainResponse> direct =
      client_->Explain(testing::RolloutHeader(a), ViewOf(a), every_head);
  ASSERT_TRUE(direct.ok()) << direct.status();
  const std::vector<float> expected = testing::MapValues(direct->results(0).maps(0));

  constexpr int kThreads = 4, kPasses = 10;
  std::vector<std::vector<float>> maps(kThreads * kPasses);
  std::vector<absl::Status> errors(kThreads * kPasses);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPasses; ++i) {
        absl::StatusOr<v1::ExplainResponse> r = client_->Explain(pass, absl::Seconds(20));
        errors[t * kPasses + i] = r.status();
        if (r.ok()) maps[t * kPasses + i] = testing::MapValues(r->results(0).maps(0));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads * kPasses; ++i) {
    ASSERT_TRUE(errors[i].ok()) << i << ": " << errors[i];
    EXPECT_EQ(maps[i], expected) << i;
  }
  ExpectMemoryReleased();
}

TEST_F(ServerTest, PreparedPassGoesOverAStreamAgainAndAgainAndTheStreamSaysWhenItIsDone) {
  const testing::Attention a = RandomAttention(1, 2, 2, 8, 13);
  const PreparedPass pass(testing::RolloutHeader(a, "ignored"), ViewOf(a));
  std::mutex mu;
  std::vector<std::string> ids;
  std::atomic<int> done{0};
  PassStreamOptions options;
  options.on_result = [&](const std::string& id, absl::StatusOr<v1::ExplainResponse> r) {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(r.ok()) << id << ": " << r.status();
    if (r.ok()) {
      EXPECT_EQ(r->request_id(), id);
    }
    ids.push_back(id);
  };
  options.on_done = [&] { ++done; };
  std::unique_ptr<PassStream> stream = client_->ExplainStream(options);
  CallStats stats;
  for (const char* id : {"a", "b", "c", "d"}) ASSERT_TRUE(stream->AddPass(id, pass, &stats).ok());
  EXPECT_EQ(stats.messages_sent, 4 * pass.messages());
  EXPECT_EQ(stats.bytes_sent, 4 * pass.tensor_bytes());
  ASSERT_TRUE(stream->Finish().ok());
  EXPECT_THAT(ids, ElementsAre("a", "b", "c", "d"));
  EXPECT_EQ(done.load(), 1);

  // A cancelled stream is done without Finish: on_done tells a waiting caller.
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool cancelled_done = false;
  PassStreamOptions cancel_options;
  cancel_options.on_done = [&] {
    std::lock_guard<std::mutex> lock(done_mu);
    cancelled_done = true;
    done_cv.notify_all();
  };
  std::unique_ptr<PassStream> cancelled = client_->ExplainStream(cancel_options);
  cancelled->Cancel();
  {
    std::unique_lock<std::mutex> lock(done_mu);
    EXPECT_TRUE(done_cv.wait_for(lock, std::chrono::seconds(10), [&] { return cancelled_done; }));
  }
  EXPECT_EQ(cancelled->Finish().code(), absl::StatusCode::kCancelled);
  ExpectMemoryReleased();
}

}  // namespace
}  // namespace attnroll::client
