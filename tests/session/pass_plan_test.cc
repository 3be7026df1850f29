// Planning a pass is a pure function of its header and the limits: every
// layout, limit and option check, the memory it will reserve and the flow
// cost, without a session or a server.
#include "server/session/pass_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/analysis/rollout.h"
#include "server/runtime/refusal.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::session {
namespace {

using ::testing::HasSubstr;
using testing::IsOk;
using testing::StatusIs;

v1::PassHeader Header(int L, int H, int n, int B = 1) {
  v1::PassHeader h;
  h.set_request_id("p");
  h.mutable_layout()->set_num_layers(L);
  h.mutable_layout()->set_num_heads(H);
  h.mutable_layout()->set_num_tokens(n);
  h.mutable_layout()->set_batch_size(B);
  return h;
}

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kExhausted = absl::StatusCode::kResourceExhausted;

TEST(PassPlanTest, LayoutAndLimitErrors) {
  EXPECT_THAT(PlanPass(v1::PassHeader(), {}), StatusIs(kInvalid, HasSubstr("header.layout")));
  EXPECT_THAT(PlanPass(Header(0, 1, 4), {}),
              StatusIs(kInvalid, HasSubstr("layout.num_layers: expected 1 <= value")));
  runtime::PassLimits small;
  small.max_tokens = 16;
  EXPECT_THAT(PlanPass(Header(1, 1, 17), small),
              StatusIs(kExhausted, HasSubstr("layout.num_tokens: 17 exceeds the server limit of 16")));
  small = runtime::PassLimits();
  small.max_pass_bytes = 1000;
  EXPECT_THAT(PlanPass(Header(2, 2, 8), small), IsOk());  // 2*2*64*2 = 512 bytes min: fits
  EXPECT_THAT(PlanPass(Header(4, 2, 8), small),           // 1024 > 1000
              StatusIs(kExhausted, HasSubstr("max_pass_bytes of 1000")));

  v1::PassHeader h = Header(1, 1, 8, 2);
  h.mutable_layout()->add_valid_lengths(8);
  EXPECT_THAT(PlanPass(h, {}), StatusIs(kInvalid, HasSubstr("layout.valid_lengths: expected 2 lengths")));
  h.mutable_layout()->add_valid_lengths(9);
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("layout.valid_lengths[1]: expected 1 <= length <= num_tokens = 8, got 9")));
  h = Header(1, 1, 8);
  h.mutable_layout()->set_prefix_tokens(1);
  h.mutable_layout()->mutable_grid()->set_height(2);
  h.mutable_layout()->mutable_grid()->set_width(3);
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("grid: 2x3 = 6 cells, expected valid length - prefix_tokens = 8 - 1 = 7")));
  h = Header(1, 1, 8);
  h.set_row_sum_tolerance(1.0f);
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("header.row_sum_tolerance: expected 0 <= tolerance < 1, got 1")));
}

TEST(PassPlanTest, AnalysisErrorsNameTheirPath) {
  v1::PassHeader h = Header(1, 2, 8);
  h.add_analyses()->mutable_rollout()->set_fusion(v1::HEAD_FUSION_WEIGHTED);
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("analyses[0] (sequence 0): rollout.head_weights: expected 2 weights")));
  h = Header(1, 2, 8);
  h.add_analyses()->mutable_rollout();
  h.add_analyses()->mutable_rollout()->set_fusion(static_cast<v1::HeadFusion>(42));
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("analyses[1].rollout.fusion: expected MEAN, MAX, MIN, WEIGHTED or NONE, got 42")));
  h = Header(1, 2, 8);
  h.add_analyses()->mutable_rollout()->mutable_readout()->add_rows(8);
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("analyses[0].rollout.readout.rows: row 8 out of range")));
  // Flow options are named as flow's, never as rollout's.
  h = Header(2, 2, 8);
  h.add_analyses()->mutable_flow()->mutable_layers()->set_last(5);
  EXPECT_THAT(PlanPass(h, {}), StatusIs(kInvalid, HasSubstr("analyses[0] (sequence 0): flow.layers: expected")));
  h = Header(2, 2, 8);
  h.add_analyses()->mutable_flow()->set_fusion(v1::HEAD_FUSION_NONE);
  EXPECT_THAT(PlanPass(h, {}), StatusIs(kInvalid, HasSubstr("analyses[0].flow.fusion: expected MEAN")));
  h = Header(2, 2, 8);
  h.add_analyses();
  EXPECT_THAT(PlanPass(h, {}),
              StatusIs(kInvalid, HasSubstr("analyses[0]: expected one analysis kind (rollout, flow or validate), got none")));
}

TEST(PassPlanTest, PlansOneDefaultRolloutAndCountsItsMemory) {
  const v1::PassHeader h = Header(3, 2, 16, 2);
  absl::StatusOr<PassPlan> plan = PlanPass(h, {});
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->request_id, "p");
  EXPECT_EQ(plan->batch, 2);
  EXPECT_THAT(plan->valid, ::testing::ElementsAre(16, 16));
  ASSERT_EQ(plan->analyses.size(), 1u);
  EXPECT_FALSE(plan->analyses[0].flow);
  EXPECT_FALSE(plan->needs_gradient);
  // The analyses' own memory (both sequences) is part of the plan's bound.
  const analysis::RolloutSpec& spec = plan->analyses[0].spec;
  const int64_t analyses =
      2 * analysis::RolloutWorkingBytes(spec, 3, 2, 16, plan->analyses[0].path);
  EXPECT_GT(plan->working_bytes, analyses);
  EXPECT_EQ(plan->flow_cost, 0.0);
}

TEST(PassPlanTest, FlowCostIsBoundedBeforeAnythingIsAllocated) {
  v1::PassHeader h = Header(12, 2, 197);
  h.add_analyses()->mutable_flow()->set_all_rows(true);
  absl::StatusOr<PassPlan> plan = PlanPass(h, {});
  ASSERT_THAT(plan, IsOk());
  EXPECT_TRUE(plan->analyses[0].flow);
  EXPECT_GT(plan->flow_cost, 0.0);
  runtime::PassLimits limits;
  limits.max_flow_cost = plan->flow_cost / 2;
  EXPECT_THAT(PlanPass(h, limits),
              StatusIs(kExhausted, HasSubstr("over the server's max_flow_cost")));
  // More threads, more solver scratch.
  absl::StatusOr<PassPlan> two = PlanPass(h, {}, 2);
  ASSERT_THAT(two, IsOk());
  EXPECT_GT(two->working_bytes, plan->working_bytes);
}

TEST(PassPlanTest, WorkABadHeaderCanAskForIsBounded) {
  runtime::PassLimits limits;
  limits.max_analyses = 3;
  limits.max_rows = 4;
  limits.max_response_bytes = 64 * 1024;
  v1::PassHeader h = Header(2, 2, 64);
  for (int i = 0; i < 4; ++i) h.add_analyses()->mutable_rollout();
  absl::StatusOr<PassPlan> plan = PlanPass(h, limits);
  EXPECT_THAT(plan, StatusIs(kExhausted, HasSubstr("analyses: 4 analyses in one pass, over the server's "
                                                   "max_analyses of 3")));
  EXPECT_EQ(runtime::RefusalOf(plan.status()), runtime::Refusal::kLimits);
  h = Header(2, 2, 64);
  auto* rows = h.add_analyses()->mutable_rollout()->mutable_readout();
  for (int r = 0; r < 5; ++r) rows->add_rows(r);
  EXPECT_THAT(PlanPass(h, limits), StatusIs(kExhausted, HasSubstr("analyses[0].rollout.readout.rows: 5 rows, "
                                                                  "over the server's max_rows of 4")));
  h = Header(2, 2, 64);
  rows = h.add_analyses()->mutable_rollout()->mutable_readout();
  for (int r : {3, 1, 3}) rows->add_rows(r);
  EXPECT_THAT(PlanPass(h, limits),
              StatusIs(kInvalid, HasSubstr("analyses[0].rollout.readout.rows: expected distinct rows, got row 3 twice")));
  // 3 analyses x 2 sequences x 16 layers x 4 rows x 64 tokens x 4 bytes = 98304 bytes.
  h = Header(16, 2, 64, 2);
  for (int i = 0; i < 3; ++i) {
    auto* ro = h.add_analyses()->mutable_rollout();
    ro->set_per_layer(true);
    for (int r = 0; r < 4; ++r) ro->mutable_readout()->add_rows(r);
  }
  plan = PlanPass(h, limits);
  EXPECT_THAT(plan, StatusIs(kExhausted, HasSubstr("response: the maps asked for are 98304 bytes, over the "
                                                   "server's max_response_bytes of 65536")));
  limits.max_response_bytes = 98304;
  plan = PlanPass(h, limits);
  ASSERT_THAT(plan, IsOk());
  EXPECT_EQ(plan->response_bytes, 98304);
}

}  // namespace
}  // namespace attnroll::session
