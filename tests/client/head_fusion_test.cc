// Heads fused on the client (client/cpp/head_fusion.h): the fused values
// against a by-hand mean in double, when each mode fuses, and, against an
// in-process server, that every call that sends a whole pass sends H times
// fewer bytes and gets the maps of the pass sent with every head.
#include "client/cpp/head_fusion.h"

#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/attnroll_client.h"
#include "tests/testutil/server_fixture.h"

namespace attnroll::client {
namespace {

using ::testing::FloatNear;
using ::testing::Pointwise;
using testing::ServerTest;
using testing::ViewOf;

testing::Attention RandomAttention(int64_t batch, int64_t layers, int64_t heads, int64_t tokens,
                                   unsigned seed) {
  std::mt19937 rng(seed);
  return testing::MakeAttention(batch, layers, heads, tokens, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(static_cast<int>(tokens), rng, 2.0f);
  });
}

v1::PassHeader RowsHeader(std::initializer_list<uint32_t> rows) {
  v1::PassHeader h;
  v1::RolloutOptions* r = h.add_analyses()->mutable_rollout();
  for (uint32_t row : rows) r->mutable_readout()->add_rows(row);
  return h;
}

TEST(FuseHeadsTest, IsTheWeightedMeanOverHeadsNormalisedByTheWeights) {
  const testing::Attention a = RandomAttention(2, 3, 4, 5, 1);
  const std::vector<float> w = {0.5f, 0.0f, 2.0f, 1.5f};
  const FusedAttention f = *FuseHeads(ViewOf(a), w);
  EXPECT_EQ(f.view.heads, 1);
  EXPECT_EQ(f.view.layers, 3);
  EXPECT_EQ(f.view.batch, 2);
  ASSERT_EQ(f.data.size(), 2u * 3 * 25);
  for (int64_t bl = 0; bl < 6; ++bl) {
    for (int64_t i = 0; i < 25; ++i) {
      double s = 0;
      for (int h = 0; h < 4; ++h) s += w[h] * a.values[(bl * 4 + h) * 25 + i];
      EXPECT_NEAR(f.data[bl * 25 + i], s / 4.0, 1e-7) << "block " << bl << ", entry " << i;
    }
  }
}

// The arithmetic both clients share with the server's own fusion, bit for bit:
// mean (equal weights): the heads summed in head order in fp32, times
// fl(w_0 / sum w); other weights: fl(w_h / sum w) A_h added in head order,
// each product rounded before its sum. Padding (past a sequence's valid
// length) is fused the same way; more than kMaxFuseGroup heads cross the
// kernels' head groups.
TEST(FuseHeadsTest, FusedValuesAreTheSharedArithmeticBitForBit) {
  const int64_t B = 2, L = 2, H = 7, n = 9, e = n * n;
  testing::Attention a = RandomAttention(B, L, H, n, 3);
  HeadChecks checks;
  checks.valid = {9, 6};
  // Sequence 1's valid 6 x 6 block rows sum to 1; its padding keeps other values.
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t h = 0; h < H; ++h) {
      float* m = a.at(1, l, h);
      for (int i = 0; i < 6; ++i) {
        double s = 0;
        for (int j = 0; j < 6; ++j) s += m[i * n + j];
        for (int j = 0; j < 6; ++j) m[i * n + j] = static_cast<float>(m[i * n + j] / s);
      }
    }
  }
  for (const std::vector<float>& w :
       {std::vector<float>(H, 2.0f), std::vector<float>{1.0f, 2.0f, 0.0f, 0.5f, 3.0f, 0.25f, 1.0f}}) {
    const bool equal = w[1] == w[0];
    double sum = 0;
    for (float x : w) sum += x;
    std::vector<float> want(static_cast<size_t>(B * L * e));
    for (int64_t bl = 0; bl < B * L; ++bl) {
      for (int64_t i = 0; i < e; ++i) {
        float acc = 0.0f;
        for (int64_t h = 0; h < H; ++h) {
          const float v = a.values[(bl * H + h) * e + i];
          const float t = equal ? v : static_cast<float>(w[h] / sum) * v;
          acc = h == 0 ? t : acc + t;
        }
        want[bl * e + i] = equal ? acc * static_cast<float>(w[0] / sum) : acc;
      }
    }
    for (const HeadChecks* c : std::vector<const HeadChecks*>{nullptr, &checks}) {
      absl::StatusOr<FusedAttention> f = FuseHeads(ViewOf(a), w, c);
      ASSERT_TRUE(f.ok()) << f.status();
      ASSERT_EQ(f->data.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(f->data[i], want[i]) << (equal ? "mean" : "weighted") << ", entry " << i;
      }
    }
  }
}

TEST(FuseHeadsTest, EachModeFusesOnlyWhenThePassAllowsIt) {
  const testing::Attention a = RandomAttention(1, 2, 3, 4, 2);
  const AttentionView view = ViewOf(a);
  auto fuse = [&](v1::PassHeader h, ClientFusion mode) {
    h.mutable_layout()->set_num_heads(3);
    return MaybeFuseHeads(&h, {&view}, mode);
  };
  v1::PassHeader mean = RowsHeader({0});
  mean.mutable_layout()->set_num_heads(3);
  absl::StatusOr<std::vector<FusedAttention>> fused = MaybeFuseHeads(&mean, {&view}, ClientFusion::kAuto);
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_EQ(fused->size(), 1u);
  EXPECT_TRUE(mean.layout().heads_fused_by_client());
  EXPECT_TRUE(fuse(RowsHeader({0}), ClientFusion::kOff)->empty());

  v1::PassHeader max = RowsHeader({0});
  max.mutable_analyses(0)->mutable_rollout()->set_fusion(v1::HEAD_FUSION_MAX);
  EXPECT_TRUE(fuse(max, ClientFusion::kAuto)->empty());  // sends the heads
  EXPECT_EQ(fuse(max, ClientFusion::kOn).status(),
            absl::InvalidArgumentError("cannot fuse heads on the client: analyses[0].rollout.fusion: "
                                       "fusing heads on the client needs MEAN or WEIGHTED fusion, got MAX"));
  // Value norms scale single heads.
  std::vector<float> norms(2 * 3 * 4, 1.0f);
  AttentionView with_norms = view;
  with_norms.value_norms = norms.data();
  v1::PassHeader h = RowsHeader({0});
  h.mutable_layout()->set_num_heads(3);
  EXPECT_TRUE(MaybeFuseHeads(&h, {&with_norms}, ClientFusion::kAuto)->empty());
  EXPECT_FALSE(h.layout().heads_fused_by_client());
  EXPECT_EQ(MaybeFuseHeads(&h, {&with_norms}, ClientFusion::kOn).status(),
            absl::InvalidArgumentError("cannot fuse heads on the client: value_norms: fusing heads on "
                                       "the client needs no value norms (they scale each head)"));
  // One head: nothing to gain, unless asked.
  const testing::Attention one = RandomAttention(1, 2, 1, 4, 3);
  const AttentionView one_view = ViewOf(one);
  v1::PassHeader h1 = RowsHeader({0});
  h1.mutable_layout()->set_num_heads(1);
  EXPECT_TRUE(MaybeFuseHeads(&h1, {&one_view}, ClientFusion::kAuto)->empty());
  EXPECT_EQ(MaybeFuseHeads(&h1, {&one_view}, ClientFusion::kOn)->size(), 1u);
}

// The server sees only the fused rows, so the client checks every head as
// the server would: a negative entry the mean hides, a row of one head that
// does not sum to 1, attention above the diagonal of a causal model; padding
// beyond a sequence's valid length is not read.
TEST(FuseHeadsTest, EveryHeadIsValidatedAsTheServerWouldBeforeFusing) {
  testing::Attention a = RandomAttention(2, 2, 2, 6, 8);
  v1::PassHeader h = RowsHeader({0});
  h.mutable_layout()->set_num_heads(2);
  const AttentionView view = ViewOf(a);
  ASSERT_TRUE(MaybeFuseHeads(&h, {&view}, ClientFusion::kAuto).ok());

  // Head 1 of layer 1, sequence 1, row 3: -0.01 at column 2, the row still
  // summing to 1; the mean over both heads stays >= 0.
  float* row = a.at(1, 1, 1) + 3 * 6;
  const float other = a.at(1, 1, 0)[3 * 6 + 2];
  row[4] += row[2] + 0.01f;
  row[2] = -0.01f;
  ASSERT_GT(other - 0.01f, 0.0f) << "the mean must hide the negative entry for this test";
  v1::PassHeader h2 = RowsHeader({0});
  h2.mutable_layout()->set_num_heads(2);
  EXPECT_EQ(MaybeFuseHeads(&h2, {&view}, ClientFusion::kAuto).status(),
            absl::InvalidArgumentError("attention (layer 1, head 1, sequence 1, row 3): expected "
                                       "probabilities >= 0, got -0.01 at column 2, found by the "
                                       "client while fusing heads"));
  EXPECT_FALSE(h2.layout().heads_fused_by_client());
  EXPECT_TRUE(MaybeFuseHeads(&h2, {&view}, ClientFusion::kOff)->empty());  // the server will say

  // Sequence 1 valid for 3 tokens: its padding (-5 everywhere) is not read.
  std::mt19937 rng(3);
  const testing::Attention padded = testing::MakeAttention(2, 1, 2, 6, [&](int64_t b, int64_t, int64_t) {
    if (b == 0) return testing::RandomStochastic(6, rng);
    analysis::MatrixF m = analysis::MatrixF::Constant(6, 6, -5.0f);
    m.topLeftCorner(3, 3) = testing::RandomStochastic(3, rng);
    return m;
  });
  const AttentionView padded_view = ViewOf(padded);
  v1::PassHeader hp = RowsHeader({0});
  hp.mutable_layout()->set_num_heads(2);
  hp.mutable_layout()->add_valid_lengths(6);
  hp.mutable_layout()->add_valid_lengths(3);
  EXPECT_TRUE(MaybeFuseHeads(&hp, {&padded_view}, ClientFusion::kAuto).ok());
  hp.mutable_layout()->clear_valid_lengths();
  hp.mutable_layout()->set_heads_fused_by_client(false);
  EXPECT_THAT(std::string(MaybeFuseHeads(&hp, {&padded_view}, ClientFusion::kAuto).status().message()),
              ::testing::StartsWith("attention (layer 0, head 0, sequence 1, row 0): expected "
                                    "probabilities >= 0, got -5 at column 3"));

  // A row of head 0 summing to 1.01 (tolerance 1e-3 at fp32, 2e-2 at bf16).
  testing::Attention c = RandomAttention(1, 1, 3, 5, 9);
  for (int j = 0; j < 5; ++j) c.at(0, 0, 0)[2 * 5 + j] *= 1.01f;
  const AttentionView cv = ViewOf(c);
  v1::PassHeader h3 = RowsHeader({0});
  h3.mutable_layout()->set_num_heads(3);
  absl::Status sum = MaybeFuseHeads(&h3, {&cv}, ClientFusion::kAuto).status();
  EXPECT_EQ(sum.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sum.message()),
              ::testing::StartsWith("attention (layer 0, head 0, sequence 0, row 2): expected the row "
                                    "over the 5 valid tokens to sum to 1 +- 0.001, got 1.01"));
  EXPECT_TRUE(MaybeFuseHeads(&h3, {&cv}, ClientFusion::kAuto, v1::DTYPE_BF16).ok());

  // Causal: head 2 of a lower-triangular pass with 0.1 above the diagonal.
  testing::Attention d = testing::MakeAttention(1, 1, 3, 4, [](int64_t, int64_t, int64_t) {
    analysis::MatrixF m = analysis::MatrixF::Zero(4, 4);
    for (int i = 0; i < 4; ++i) m.row(i).head(i + 1).setConstant(1.0f / (i + 1));
    return m;
  });
  d.at(0, 0, 2)[0 * 4 + 0] = 0.9f;
  d.at(0, 0, 2)[0 * 4 + 1] = 0.1f;
  const AttentionView dv = ViewOf(d);
  v1::PassHeader h4 = RowsHeader({0});
  h4.mutable_layout()->set_num_heads(3);
  h4.mutable_layout()->set_causal(true);
  EXPECT_THAT(std::string(MaybeFuseHeads(&h4, {&dv}, ClientFusion::kAuto).status().message()),
              ::testing::StartsWith("attention (layer 0, head 2, sequence 0, row 0): causal layout "
                                    "expects no attention above the diagonal, got 0.1 at column 1"));
}

// A pass over kParallelFusionBytes fused on 1, 2 and 4 threads: the same
// values bit for bit, and with two refused rows in adjacent layers (claimed
// at about the same time by two threads; the earlier layer's is its last
// head's last row, the later layer's its first head's first row, so the
// later one is usually found first) the one of the earlier layer.
TEST(FuseHeadsTest, SeveralThreadsGiveOneThreadsValuesAndItsFirstError) {
  testing::Attention a = RandomAttention(2, 8, 4, 160, 21);  // 6.6 MB
  const AttentionView view = ViewOf(a);
  ASSERT_GE(view.batch * view.layers * view.heads * view.tokens * view.tokens * 4,
            kParallelFusionBytes);
  const std::vector<float> weights(4, 1.0f);
  HeadChecks checks;
  const absl::StatusOr<FusedAttention> one = FuseHeads(view, weights, &checks, 1);
  ASSERT_TRUE(one.ok()) << one.status();
  for (int threads : {2, 4}) {
    const absl::StatusOr<FusedAttention> many = FuseHeads(view, weights, &checks, threads);
    ASSERT_TRUE(many.ok()) << many.status();
    ASSERT_EQ(many->data.size(), one->data.size());
    EXPECT_EQ(std::memcmp(many->data.data(), one->data.data(), one->data.size() * sizeof(float)), 0)
        << threads << " threads";
  }
  // Sequence 1: layer 7, head 0, row 0 and layer 6, head 3, row 159 sum to 1.01.
  for (int j = 0; j < 160; ++j) a.at(1, 7, 0)[0 * 160 + j] *= 1.01f;
  for (int j = 0; j < 160; ++j) a.at(1, 6, 3)[159 * 160 + j] *= 1.01f;
  for (int threads : {1, 2, 4}) {
    for (int round = 0; round < 50; ++round) {
      const absl::Status st = FuseHeads(view, weights, &checks, threads).status();
      ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
      ASSERT_THAT(std::string(st.message()),
                  ::testing::StartsWith("attention (layer 6, head 3, sequence 1, row 159): expected "
                                        "the row over the 160 valid tokens to sum to 1 +- 0.001"))
          << threads << " threads, round " << round;
    }
  }
}

TEST_F(ServerTest, ExplainFusesMeanPassesAndGetsTheMapsOfEveryHead) {
  const testing::Attention a = RandomAttention(2, 4, 6, 10, 4);
  const v1::PassHeader header = RowsHeader({0, 3});
  ExplainOptions off;
  off.client_fusion = ClientFusion::kOff;
  CallStats full_stats, fused_stats;
  absl::StatusOr<v1::ExplainResponse> full = client_->Explain(header, ViewOf(a), off, &full_stats);
  ASSERT_TRUE(full.ok()) << full.status();
  absl::StatusOr<v1::ExplainResponse> fused = client_->Explain(header, ViewOf(a), {}, &fused_stats);
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_FALSE(full_stats.heads_fused_on_client);
  EXPECT_FALSE(full->heads_fused_by_client());
  EXPECT_TRUE(fused_stats.heads_fused_on_client);
  EXPECT_TRUE(fused->heads_fused_by_client());
  EXPECT_EQ(full_stats.bytes_sent, 2 * 4 * 6 * 10 * 10 * 4);
  EXPECT_EQ(fused_stats.bytes_sent, 2 * 4 * 1 * 10 * 10 * 4);
  for (int b = 0; b < 2; ++b) {
    EXPECT_THAT(testing::MapValues(fused->results(0).maps(b)),
                Pointwise(FloatNear(2e-6), testing::MapValues(full->results(0).maps(b))));
  }
  // fp16 on the wire as well: 12x fewer bytes than every head at fp32... and
  // close to the fp32 maps (fp16 rounding of the fused rows).
  ExplainOptions fp16;
  fp16.wire = v1::DTYPE_FP16;
  CallStats half_stats;
  absl::StatusOr<v1::ExplainResponse> half = client_->Explain(header, ViewOf(a), fp16, &half_stats);
  ASSERT_TRUE(half.ok()) << half.status();
  EXPECT_EQ(half_stats.bytes_sent, 2 * 4 * 10 * 10 * 2);
  EXPECT_THAT(testing::MapValues(half->results(0).maps(0)),
              Pointwise(FloatNear(2e-3), testing::MapValues(full->results(0).maps(0))));
  // kOn where the pass needs the heads: refused before anything is sent.
  v1::PassHeader max = header;
  max.mutable_analyses(0)->mutable_rollout()->set_fusion(v1::HEAD_FUSION_MAX);
  ExplainOptions on;
  on.client_fusion = ClientFusion::kOn;
  EXPECT_EQ(client_->Explain(max, ViewOf(a), on).status().code(), absl::StatusCode::kInvalidArgument);
  ExpectMemoryReleased();
}

TEST_F(ServerTest, StreamsPairsAuditsAndPreparedPassesFuseToo) {
  const testing::Attention a = RandomAttention(1, 3, 4, 8, 6);
  const testing::Attention b = RandomAttention(1, 3, 4, 8, 7);
  const v1::PassHeader header = RowsHeader({1});
  ExplainOptions off;
  off.client_fusion = ClientFusion::kOff;
  absl::StatusOr<v1::ExplainResponse> full = client_->Explain(header, ViewOf(a), off);
  ASSERT_TRUE(full.ok()) << full.status();
  const std::vector<float> expected = testing::MapValues(full->results(0).maps(0));

  const PreparedPass prepared(header, ViewOf(a));
  EXPECT_TRUE(prepared.heads_fused_on_client());
  EXPECT_EQ(prepared.tensor_bytes(), 3 * 8 * 8 * 4);
  absl::StatusOr<v1::ExplainResponse> p = client_->Explain(prepared);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(testing::MapValues(p->results(0).maps(0)), Pointwise(FloatNear(2e-6), expected));

  CallStats stream_stats;
  absl::StatusOr<v1::ExplainResponse> streamed =
      client_->ExplainWithProgress(header, ViewOf(a), {}, nullptr, &stream_stats);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(stream_stats.heads_fused_on_client);
  EXPECT_TRUE(streamed->heads_fused_by_client());
  EXPECT_THAT(testing::MapValues(streamed->results(0).maps(0)), Pointwise(FloatNear(2e-6), expected));

  absl::StatusOr<v1::PairResponse> pair_full = client_->ExplainPair(header, {}, ViewOf(a), ViewOf(b), off);
  absl::StatusOr<v1::PairResponse> pair = client_->ExplainPair(header, {}, ViewOf(a), ViewOf(b));
  ASSERT_TRUE(pair_full.ok()) << pair_full.status();
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_TRUE(pair->baseline().heads_fused_by_client());
  EXPECT_TRUE(pair->candidate().heads_fused_by_client());
  EXPECT_THAT(testing::MapValues(pair->candidate().results(0).maps(0)),
              Pointwise(FloatNear(2e-6), testing::MapValues(pair_full->candidate().results(0).maps(0))));
  EXPECT_NEAR(pair->comparisons(0).spearman().value(), pair_full->comparisons(0).spearman().value(), 1e-6);

  v1::AuditHeader audit;
  audit.set_map_length(8);
  std::map<std::string, v1::AuditItemResult> items;
  std::mutex mu;
  AuditOptions audit_options;
  audit_options.on_item = [&](const v1::AuditItemResult& r) {
    std::lock_guard<std::mutex> lock(mu);
    items[r.id()] = r;
  };
  std::unique_ptr<AuditStream> stream = client_->Audit(audit, audit_options);
  ASSERT_TRUE(stream->AddPasses("fused", "", header, ViewOf(a), ViewOf(b)).ok());
  ASSERT_TRUE(stream->AddPasses("full", "", header, ViewOf(a), ViewOf(b), off).ok());
  absl::StatusOr<v1::AuditReport> report = stream->Finish();
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(items.size(), 2u);
  ASSERT_FALSE(items["fused"].has_error()) << items["fused"].error().message();
  ASSERT_FALSE(items["full"].has_error()) << items["full"].error().message();
  EXPECT_GT(items["full"].comparison().js_divergence(), 1e-4);  // the two models differ
  EXPECT_NEAR(items["fused"].comparison().spearman().value(), items["full"].comparison().spearman().value(),
              1e-6);
  EXPECT_NEAR(items["fused"].comparison().js_divergence(), items["full"].comparison().js_divergence(), 1e-6);
  ExpectMemoryReleased();
}

}  // namespace
}  // namespace attnroll::client
