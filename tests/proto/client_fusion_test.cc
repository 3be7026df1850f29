// The rule for fusing heads on the client (proto/cpp/client_fusion.h): the
// weights for each kind of pass that allows it, and the field named for each
// that does not.
#include "proto/cpp/client_fusion.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "attnroll/v1/analysis.pb.h"

namespace attnroll::v1 {
namespace {

using ::testing::ElementsAre;

PassHeader Header(int heads) {
  PassHeader h;
  h.mutable_layout()->set_num_layers(2);
  h.mutable_layout()->set_num_heads(heads);
  h.mutable_layout()->set_num_tokens(5);
  return h;
}

std::string Refusal(const PassHeader& h) {
  absl::StatusOr<std::vector<float>> w = ClientFusionWeights(h);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
  return std::string(w.status().message());
}

TEST(ClientFusionTest, MeanAndTheDefaultRolloutFuseWithUnitWeights) {
  PassHeader none = Header(3);  // no analysis: the default rollout (mean)
  EXPECT_THAT(*ClientFusionWeights(none), ElementsAre(1, 1, 1));
  PassHeader h = Header(3);
  h.add_analyses()->mutable_rollout();
  h.add_analyses()->mutable_flow();
  h.add_analyses()->mutable_validate();
  h.add_analyses()->mutable_rollout()->mutable_pruning()->set_top_k(2);
  EXPECT_THAT(*ClientFusionWeights(h), ElementsAre(1, 1, 1));
}

TEST(ClientFusionTest, WeightedFusionNeedsOneSetOfNonNegativeWeights) {
  PassHeader h = Header(3);
  RolloutOptions* r = h.add_analyses()->mutable_rollout();
  r->set_fusion(HEAD_FUSION_WEIGHTED);
  for (float w : {0.5f, 0.0f, 2.0f}) r->add_head_weights(w);
  FlowOptions* f = h.add_analyses()->mutable_flow();
  f->set_fusion(HEAD_FUSION_WEIGHTED);
  *f->mutable_head_weights() = r->head_weights();
  EXPECT_THAT(*ClientFusionWeights(h), ElementsAre(0.5f, 0.0f, 2.0f));

  f->set_head_weights(2, 1.0f);
  EXPECT_EQ(Refusal(h),
            "analyses[1].flow: fusing heads on the client sends one fused matrix per layer, so every "
            "analysis needs analyses[0].rollout's fusion (WEIGHTED with the same "
            "head_weights), got WEIGHTED with other head_weights");
  h.mutable_analyses()->RemoveLast();
  r->set_head_weights(1, -0.25f);
  EXPECT_EQ(Refusal(h),
            "analyses[0].rollout.head_weights[1]: fusing heads on the client needs finite weights >= 0 "
            "(the fused rows are sent normalised), got -0.25");
  for (int i = 0; i < 3; ++i) r->set_head_weights(i, 0.0f);
  EXPECT_EQ(Refusal(h), "analyses[0].rollout.head_weights: fusing heads on the client needs weights "
                        "summing to > 0, got 0");
  r->mutable_head_weights()->RemoveLast();
  EXPECT_EQ(Refusal(h), "analyses[0].rollout.head_weights: expected 3 weights (one per head), got 2");
}

TEST(ClientFusionTest, AnalysesThatNeedTheHeadsAreNamed) {
  {
    PassHeader h = Header(4);
    h.add_analyses()->mutable_rollout();
    h.add_analyses()->mutable_rollout()->set_fusion(HEAD_FUSION_MAX);
    EXPECT_EQ(Refusal(h), "analyses[1].rollout.fusion: fusing heads on the client needs MEAN or "
                          "WEIGHTED fusion, got MAX");
  }
  {
    PassHeader h = Header(4);
    h.add_analyses()->mutable_flow()->set_fusion(HEAD_FUSION_MIN);
    EXPECT_EQ(Refusal(h), "analyses[0].flow.fusion: fusing heads on the client needs MEAN or WEIGHTED "
                          "fusion, got MIN");
  }
  {
    PassHeader h = Header(4);
    h.add_analyses()->mutable_rollout()->set_fusion(HEAD_FUSION_NONE);
    EXPECT_EQ(Refusal(h), "analyses[0].rollout.fusion: fusing heads on the client needs MEAN or "
                          "WEIGHTED fusion, got NONE");
  }
  {
    PassHeader h = Header(4);
    h.add_analyses()->mutable_rollout()->mutable_gradient();
    EXPECT_EQ(Refusal(h), "analyses[0].rollout.gradient: fusing heads on the client needs an analysis "
                          "without gradient (the gradient rule weights each head), got a "
                          "gradient-weighted rollout");
  }
  {
    PassHeader h = Header(4);
    h.add_analyses()->mutable_rollout();
    h.add_analyses()->mutable_rollout()->set_fusion(HEAD_FUSION_WEIGHTED);
    EXPECT_EQ(Refusal(h),
              "analyses[1].rollout: fusing heads on the client sends one fused matrix per layer, so "
              "every analysis needs analyses[0].rollout's fusion (MEAN), got "
              "WEIGHTED");
  }
  {
    PassHeader h = Header(4);
    h.mutable_layout()->mutable_encoder_decoder()->set_encoder_layers(1);
    EXPECT_EQ(Refusal(h), "layout.heads_fused_by_client: not supported with layout.encoder_decoder "
                          "(send the heads)");
  }
}

}  // namespace
}  // namespace attnroll::v1
