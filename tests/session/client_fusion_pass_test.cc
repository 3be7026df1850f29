// Passes whose heads the client fused (Layout.heads_fused_by_client): the
// maps equal those of the same pass sent with every head, for mean and
// weighted fusion, on the row, chain and flow paths; what needs the heads is
// refused by name; the limits count what is sent.
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/session/pass_plan.h"
#include "server/session/pass_session.h"
#include "tests/testutil/attention_testutil.h"
#include "tests/testutil/pass_testutil.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::session {
namespace {

using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;
using testing::StatusIs;

// sum_h w_h A[b, l, h] / sum_h w_h, computed in double, as one head.
testing::Attention FusedByHand(const testing::Attention& a, const std::vector<double>& w) {
  double total = 0;
  for (double x : w) total += x;
  testing::Attention f{a.batch, a.layers, 1, a.tokens,
                       std::vector<float>(static_cast<size_t>(a.batch * a.layers * a.tokens * a.tokens))};
  const int64_t block = a.tokens * a.tokens;
  for (int64_t bl = 0; bl < a.batch * a.layers; ++bl) {
    for (int64_t i = 0; i < block; ++i) {
      double s = 0;
      for (int64_t h = 0; h < a.heads; ++h) s += w[h] * a.values[(bl * a.heads + h) * block + i];
      f.values[bl * block + i] = static_cast<float>(s / total);
    }
  }
  return f;
}

absl::StatusOr<v1::ExplainResponse> RunPass(const v1::PassHeader& h, const testing::Attention& a) {
  absl::StatusOr<PassPlan> plan = PlanPass(h, runtime::PassLimits());
  if (!plan.ok()) return plan.status();
  PassSession session(*std::move(plan));
  for (int l = 0; l < a.layers; ++l) {
    for (const v1::LayerChunk& c : testing::ChunksOf(a, l)) {
      if (absl::Status s = session.AddChunk(c); !s.ok()) return s;
    }
  }
  return session.Finish();
}

// Every map of every result of `fused` equals `full`'s.
void ExpectSameMaps(const v1::ExplainResponse& full, const v1::ExplainResponse& fused) {
  ASSERT_EQ(full.results_size(), fused.results_size());
  for (int r = 0; r < full.results_size(); ++r) {
    EXPECT_EQ(full.results(r).path(), fused.results(r).path());
    ASSERT_EQ(full.results(r).maps_size(), fused.results(r).maps_size());
    for (int b = 0; b < full.results(r).maps_size(); ++b) {
      EXPECT_THAT(fused.results(r).maps(b).shape(),
                  ::testing::ElementsAreArray(full.results(r).maps(b).shape()));
      EXPECT_THAT(testing::MapValues(fused.results(r).maps(b)),
                  Pointwise(FloatNear(2e-6), testing::MapValues(full.results(r).maps(b))))
          << "result " << r << ", sequence " << b;
    }
  }
}

testing::Attention RandomAttention(int B, int L, int H, int n, unsigned seed) {
  std::mt19937 rng(seed);
  return testing::MakeAttention(B, L, H, n, [&](int64_t, int64_t, int64_t) {
    return testing::RandomStochastic(n, rng);
  });
}

TEST(ClientFusionPassTest, MeanFusedPassGivesTheFullPassMapsOnEveryPath) {
  // 40 tokens, one row: the cost model picks the row path for analysis 0.
  const testing::Attention a = RandomAttention(2, 4, 3, 40, 5);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_layout()->set_prefix_tokens(1);
  v1::RolloutOptions* rows = h.mutable_analyses(0)->mutable_rollout();
  rows->mutable_readout()->add_rows(2);
  v1::RolloutOptions* chain = h.add_analyses()->mutable_rollout();
  chain->set_per_layer(true);
  chain->set_residual(0.3f);
  chain->mutable_pruning()->set_top_k(3);
  h.add_analyses()->mutable_flow()->mutable_readout()->add_rows(1);
  h.add_analyses()->mutable_validate();
  absl::StatusOr<v1::ExplainResponse> full = RunPass(h, a);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_FALSE(full->heads_fused_by_client());

  h.mutable_layout()->set_heads_fused_by_client(true);
  absl::StatusOr<v1::ExplainResponse> fused = RunPass(h, FusedByHand(a, {1, 1, 1}));
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_TRUE(fused->heads_fused_by_client());
  EXPECT_EQ(fused->results(1).path(), "chain");  // per_layer forces it
  EXPECT_EQ(fused->results(2).path(), "flow");
  EXPECT_EQ(fused->results(0).path(), "row");
  ExpectSameMaps(*full, *fused);
}

TEST(ClientFusionPassTest, WeightedFusedPassIsScaledBackByTheWeightSum) {
  // Weights summing to 2.5, not 1: the server must multiply the normalised
  // fused rows by 2.5 to get the full pass's F = sum_h w_h A[h].
  const testing::Attention a = RandomAttention(1, 3, 3, 6, 9);
  v1::PassHeader h = testing::RolloutHeader(a);
  v1::RolloutOptions* r = h.mutable_analyses(0)->mutable_rollout();
  r->set_fusion(v1::HEAD_FUSION_WEIGHTED);
  for (float w : {0.5f, 0.0f, 2.0f}) r->add_head_weights(w);
  r->mutable_readout()->add_rows(3);
  v1::FlowOptions* f = h.add_analyses()->mutable_flow();
  f->set_fusion(v1::HEAD_FUSION_WEIGHTED);
  *f->mutable_head_weights() = r->head_weights();
  absl::StatusOr<v1::ExplainResponse> full = RunPass(h, a);
  ASSERT_TRUE(full.ok()) << full.status();
  h.mutable_layout()->set_heads_fused_by_client(true);
  absl::StatusOr<v1::ExplainResponse> fused = RunPass(h, FusedByHand(a, {0.5, 0.0, 2.0}));
  ASSERT_TRUE(fused.ok()) << fused.status();
  ExpectSameMaps(*full, *fused);
  // Without the scale the maps differ: the test can fail.
  v1::PassHeader unscaled = h;
  unscaled.mutable_layout()->set_heads_fused_by_client(false);
  unscaled.mutable_layout()->set_num_heads(1);
  unscaled.mutable_analyses(0)->mutable_rollout()->clear_head_weights();
  unscaled.mutable_analyses(0)->mutable_rollout()->add_head_weights(1.0f);
  unscaled.mutable_analyses(1)->mutable_flow()->clear_head_weights();
  unscaled.mutable_analyses(1)->mutable_flow()->add_head_weights(1.0f);
  absl::StatusOr<v1::ExplainResponse> wrong = RunPass(unscaled, FusedByHand(a, {0.5, 0.0, 2.0}));
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_THAT(testing::MapValues(wrong->results(0).maps(0)),
              ::testing::Not(Pointwise(FloatNear(1e-3), testing::MapValues(full->results(0).maps(0)))));
}

TEST(ClientFusionPassTest, WhatNeedsTheHeadsIsRefusedByName) {
  const testing::Attention a = RandomAttention(1, 2, 4, 5, 3);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_layout()->set_heads_fused_by_client(true);
  h.mutable_analyses(0)->mutable_rollout()->set_fusion(v1::HEAD_FUSION_MAX);
  EXPECT_THAT(PlanPass(h, runtime::PassLimits()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "analyses[0].rollout.fusion: fusing heads on the client needs MEAN or WEIGHTED "
                       "fusion, got MAX"));

  // Every head sent where one fused head is expected.
  h.mutable_analyses(0)->mutable_rollout()->set_fusion(v1::HEAD_FUSION_MEAN);
  absl::StatusOr<PassPlan> plan = PlanPass(h, runtime::PassLimits());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->num_heads, 1);
  {
    PassSession session(*plan);
    EXPECT_THAT(session.AddChunk(testing::ChunksOf(a, 0)[0]),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("layer[0].attention.shape: expected [1, h, 5, 5] with 1 <= h <= 1 "
                                   "(heads 0..0 of the layer remain), got [1, 4, 5, 5]")));
  }
  // Value norms scale single heads: refused with a fused pass.
  const testing::Attention fused = FusedByHand(a, {1, 1, 1, 1});
  {
    PassSession session(*plan);
    v1::LayerChunk c = testing::ChunksOf(fused, 0)[0];
    *c.mutable_value_norms() = testing::Fp32Tensor(std::vector<float>(5, 1.0f), {1, 1, 5});
    EXPECT_THAT(session.AddChunk(c),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "layer[0].value_norms: not accepted with layout.heads_fused_by_client (value "
                         "norms scale each head before fusion; send the heads)"));
  }
  // The fused rows are validated like one head's.
  {
    PassSession session(*plan);
    v1::LayerChunk c = testing::ChunksOf(fused, 0)[0];
    reinterpret_cast<float*>(c.mutable_attention()->mutable_data()->data())[7] += 0.1f;
    EXPECT_THAT(session.AddChunk(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                              HasSubstr("head 0, sequence 0, row 1")));
  }
}

TEST(ClientFusionPassTest, LimitsCountTheModelsHeadsAndTheBytesSent) {
  const testing::Attention a = RandomAttention(1, 2, 8, 16, 4);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_layout()->set_heads_fused_by_client(true);
  runtime::PassLimits limits;
  limits.max_heads = 4;
  EXPECT_THAT(PlanPass(h, limits).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("layout.num_heads: 8 exceeds the server limit of 4")));
  // 2 layers x 8 heads x 16 x 16 fp32 = 16 KiB with every head; 2 KiB fused.
  limits = runtime::PassLimits();
  limits.max_pass_bytes = 4096;
  EXPECT_TRUE(PlanPass(h, limits).ok());
  h.mutable_layout()->set_heads_fused_by_client(false);
  EXPECT_THAT(PlanPass(h, limits).status(), StatusIs(absl::StatusCode::kResourceExhausted,
                                                     HasSubstr("max_pass_bytes of 4096")));
}

}  // namespace
}  // namespace attnroll::session
