// A pass's life without gRPC: message order, head ranges, and padding cropped
// before the math. (The header's checks are pass_plan_test.cc's.)
#include "server/session/pass_session.h"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/attention_testutil.h"
#include "tests/testutil/pass_testutil.h"

namespace attnroll::session {
namespace {

using ::testing::HasSubstr;
using ::testing::Pointwise;
using ::testing::FloatNear;

std::unique_ptr<PassSession> Open(const v1::PassHeader& h) {
  absl::StatusOr<PassPlan> plan = PlanPass(h, runtime::PassLimits());
  EXPECT_TRUE(plan.ok()) << plan.status();
  return std::make_unique<PassSession>(*std::move(plan));
}

TEST(PassSessionTest, OrderingErrors) {
  auto a = testing::UniformAttention(1, 3, 4, 5);
  auto session = Open(testing::RolloutHeader(a));
  auto chunks0 = testing::ChunksOf(a, 0, 2);  // 2 heads per message
  auto chunks1 = testing::ChunksOf(a, 1, 2);
  auto chunks2 = testing::ChunksOf(a, 2, 4);
  ASSERT_EQ(chunks0.size(), 2u);
  auto msg = [&](const v1::LayerChunk& c) { return std::string(session->AddChunk(c).message()); };
  EXPECT_THAT(msg(chunks1[0]), HasSubstr("layer: out of order: expected layer 0, got 1"));
  EXPECT_THAT(msg(chunks0[1]), HasSubstr("head_start: gap: expected head_start 0 for layer 0, got 2"));
  ASSERT_TRUE(session->AddChunk(chunks0[0]).ok());
  EXPECT_THAT(msg(chunks0[0]), HasSubstr("head_start: overlap: layer 0 heads 0..1 were already received"));
  EXPECT_THAT(msg(chunks1[0]), HasSubstr("layer 0 is incomplete (heads 2..3 missing), got layer 1"));
  v1::LayerChunk too_many = chunks2[0];  // 4 heads where only 2 remain
  too_many.set_layer(0);
  too_many.set_head_start(2);
  EXPECT_THAT(msg(too_many), HasSubstr("shape: expected [1, h, 5, 5] with 1 <= h <= 2"));
  ASSERT_TRUE(session->AddChunk(chunks0[1]).ok());
  EXPECT_THAT(msg(chunks0[0]), HasSubstr("layer: duplicate: layer 0 was already received"));
  ASSERT_TRUE(session->AddChunk(chunks1[0]).ok());
  ASSERT_TRUE(session->AddChunk(chunks1[1]).ok());
  absl::Status early = session->Finish().status();
  EXPECT_THAT(std::string(early.message()), HasSubstr("the stream ended after 2 complete layers; expected 3 layers"));
  ASSERT_TRUE(session->AddChunk(chunks2[0]).ok());
  v1::LayerChunk extra = chunks2[0];
  EXPECT_THAT(msg(extra), HasSubstr("all 3 layers were already received"));
  EXPECT_TRUE(session->Finish().ok());
}

TEST(PassSessionTest, PaddingIsCroppedBeforeTheMath) {
  // Sequence 1 of the batch is sequence 0 padded from 6 to 9 tokens with junk;
  // both must give the same map.
  std::mt19937 rng(11);
  const int L = 3, H = 2, n = 9, m = 6;
  std::vector<analysis::MatrixF> blocks;
  for (int i = 0; i < L * H; ++i) blocks.push_back(testing::RandomStochastic(m, rng));
  auto a = testing::MakeAttention(2, L, H, n, [&](int64_t b, int64_t l, int64_t h) {
    analysis::MatrixF full = testing::RandomStochastic(n, rng);  // junk in padded rows
    full.topLeftCorner(m, n).setZero();
    full.topLeftCorner(m, m) = blocks[l * H + h];
    if (b == 0) full = testing::RandomStochastic(n, rng);  // sequence 0: unrelated full length
    return full;
  });
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_layout()->add_valid_lengths(n);
  h.mutable_layout()->add_valid_lengths(m);
  h.mutable_layout()->set_prefix_tokens(1);
  h.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(2);
  auto session = Open(h);
  for (int l = 0; l < L; ++l) {
    for (auto& c : testing::ChunksOf(a, l)) {
      ASSERT_TRUE(session->AddChunk(c).ok());
    }
  }
  v1::ExplainResponse padded = *session->Finish();
  ASSERT_EQ(padded.results(0).maps_size(), 2);
  EXPECT_THAT(padded.results(0).maps(1).shape(), ::testing::ElementsAre(1, m - 1));

  auto alone = testing::MakeAttention(1, L, H, m, [&](int64_t, int64_t l, int64_t hh) {
    return blocks[l * H + hh];
  });
  v1::PassHeader h2 = testing::RolloutHeader(alone);
  h2.mutable_layout()->set_prefix_tokens(1);
  h2.mutable_analyses(0)->mutable_rollout()->mutable_readout()->add_rows(2);
  auto s2 = Open(h2);
  for (int l = 0; l < L; ++l) {
    for (auto& c : testing::ChunksOf(alone, l)) {
      ASSERT_TRUE(s2->AddChunk(c).ok());
    }
  }
  v1::ExplainResponse cropped = *s2->Finish();
  EXPECT_THAT(testing::MapValues(padded.results(0).maps(1)),
              Pointwise(FloatNear(1e-6), testing::MapValues(cropped.results(0).maps(0))));
}

// A validate-only analysis decodes and checks every layer and computes
// nothing: a bad value is still refused, and the result has no maps.
TEST(PassSessionTest, ValidateOnlyChecksEveryLayerAndReturnsNoMaps) {
  auto a = testing::UniformAttention(2, 3, 2, 6);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.clear_analyses();
  h.add_analyses()->mutable_validate();
  auto session = Open(h);
  for (int l = 0; l < 3; ++l) ASSERT_TRUE(session->AddChunk(testing::ChunksOf(a, l)[0]).ok());
  absl::StatusOr<v1::ExplainResponse> r = session->Finish();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->results_size(), 1);
  EXPECT_EQ(r->results(0).path(), "validate");
  EXPECT_EQ(r->results(0).maps_size(), 0);
  auto bad = Open(h);
  v1::LayerChunk c = testing::ChunksOf(a, 0)[0];
  reinterpret_cast<float*>(c.mutable_attention()->mutable_data()->data())[40] = -1.0f;
  EXPECT_THAT(std::string(bad->AddChunk(c).message()),
              HasSubstr("attention (layer 0, head 1, sequence 0, row 0): expected probabilities >= 0"));
}

// Gradient-weighted rollout with the gradient of layer 1 all zero, as a model
// whose classifier head is initialised to zero gives it: the map is still
// returned, with a warning naming the layer; fail_on_degenerate makes it an
// error.
TEST(PassSessionTest, AnAllZeroGradientIsReportedNotSilent) {
  auto a = testing::UniformAttention(1, 3, 2, 4);
  v1::PassHeader h = testing::RolloutHeader(a);
  h.mutable_analyses(0)->mutable_rollout()->mutable_gradient();
  auto run = [&](const v1::PassHeader& header) {
    auto session = Open(header);
    for (int l = 0; l < 3; ++l) {
      v1::LayerChunk c = testing::ChunksOf(a, l)[0];
      *c.mutable_gradient() = c.attention();
      std::string& g = *c.mutable_gradient()->mutable_data();
      if (l == 1) std::fill(g.begin(), g.end(), '\0');
      EXPECT_TRUE(session->AddChunk(c).ok());
    }
    return session->Finish();
  };
  absl::StatusOr<v1::ExplainResponse> r = run(h);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->results(0).warnings(),
              ::testing::ElementsAre(HasSubstr("sequence 0: the gradient is zero everywhere in layer 1,")));
  h.mutable_analyses(0)->mutable_rollout()->set_fail_on_degenerate(true);
  r = run(h);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("analyses[0] (fail_on_degenerate): sequence 0: the gradient is zero everywhere in layer 1"));
}

}  // namespace
}  // namespace attnroll::session
