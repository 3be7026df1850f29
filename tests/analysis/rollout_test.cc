// Rollout math against hand-derived values (the numpy reference is
// tests/e2e/numpy_reference.py, run by the e2e suites) and row path == chain path.
#include "server/analysis/rollout.h"

#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/attention_testutil.h"

namespace attnroll::analysis {
namespace {

using testing::Flat;
using testing::Mat;
using testing::View;
using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;

// Runs one sequence through SequenceRollout: layers[l][h].
Maps RunRollout(const RolloutSpec& spec, const std::vector<std::vector<MatrixF>>& layers, RolloutPath path) {
  const int L = static_cast<int>(layers.size()), H = static_cast<int>(layers[0].size());
  const int m = static_cast<int>(layers[0][0].rows());
  EXPECT_TRUE(ValidateRolloutSpec(spec, L, H, m).ok()) << ValidateRolloutSpec(spec, L, H, m);
  SequenceRollout r(spec, L, H, m, path);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) r.AddHead(l, h, View(layers[l][h]));
  }
  return r.Finish();
}

TEST(RolloutTest, OneLayerOneHeadByHand) {
  // At = 0.5 A + 0.5 I = [[0.75, 0.25], [0.1, 0.9]].
  const MatrixF a = Mat({{0.5f, 0.5f}, {0.2f, 0.8f}});
  RolloutSpec spec;
  spec.readout.rows = {0, 1};
  for (RolloutPath p : {RolloutPath::kRow, RolloutPath::kChain}) {
    Maps out = RunRollout(spec, {{a}}, p);
    EXPECT_THAT(out.shape, ElementsAre(2, 2));
    EXPECT_THAT(out.values, Pointwise(FloatNear(1e-6), {0.75f, 0.25f, 0.1f, 0.9f}));
  }
}

TEST(RolloutTest, LayersMultiplyLastOnTheLeft) {
  // A1 = [[0,1],[0,1]], A2 = [[1,0],[1,0]], a = 0:
  // R = A2 A1 = [[0,1],[0,1]] (row 0 -> token 1), whereas A1 A2 would give token 0.
  const MatrixF a1 = Mat({{0, 1}, {0, 1}}), a2 = Mat({{1, 0}, {1, 0}});
  RolloutSpec spec;
  spec.residual = 0.0f;
  for (RolloutPath p : {RolloutPath::kRow, RolloutPath::kChain}) {
    Maps out = RunRollout(spec, {{a1}, {a2}}, p);
    EXPECT_THAT(out.values, ElementsAre(0.0f, 1.0f));
  }
}

TEST(RolloutTest, HeadFusionsByHand) {
  const MatrixF h0 = Mat({{1.0f, 0.0f}, {0.5f, 0.5f}}), h1 = Mat({{0.2f, 0.8f}, {0.0f, 1.0f}});
  RolloutSpec spec;
  spec.residual = 0.0f;
  spec.readout.rows = {0, 1};
  struct Case {
    Fusion fusion;
    std::vector<float> weights;
    bool renorm;
    std::vector<float> expected;
  };
  const std::vector<Case> cases = {
      {Fusion::kMean, {}, true, {0.6f, 0.4f, 0.25f, 0.75f}},
      // max = [[1, .8], [.5, 1]] -> rows / sums 1.8 and 1.5
      {Fusion::kMax, {}, true, {1 / 1.8f, 0.8f / 1.8f, 0.5f / 1.5f, 1 / 1.5f}},
      {Fusion::kMax, {}, false, {1.0f, 0.8f, 0.5f, 1.0f}},
      // min = [[.2, 0], [0, .5]] -> [[1, 0], [0, 1]] after renormalisation
      {Fusion::kMin, {}, true, {1.0f, 0.0f, 0.0f, 1.0f}},
      // 3 h0 + 1 h1 = [[3.2, .8], [1.5, 2.5]] -> / 4
      {Fusion::kWeighted, {3.0f, 1.0f}, true, {0.8f, 0.2f, 0.375f, 0.625f}},
      {Fusion::kWeighted, {3.0f, 1.0f}, false, {3.2f, 0.8f, 1.5f, 2.5f}},
  };
  for (const Case& c : cases) {
    spec.fusion = c.fusion;
    spec.head_weights = c.weights;
    spec.renormalize = c.renorm;
    Maps out = RunRollout(spec, {{h0, h1}}, RolloutPath::kChain);
    EXPECT_THAT(out.values, Pointwise(FloatNear(1e-6), c.expected)) << static_cast<int>(c.fusion);
  }
}

TEST(RolloutTest, UniformAttentionClosedForm) {
  // (0.5 U + 0.5 I)^L = 0.5^L I + (1 - 0.5^L) U.
  const int n = 9, L = 5;
  std::vector<std::vector<MatrixF>> layers(L, {MatrixF::Constant(n, n, 1.0f / n)});
  RolloutSpec spec;
  spec.readout.rows = {3};
  const float p = std::pow(0.5f, L);
  std::vector<float> expected(n, (1 - p) / n);
  expected[3] += p;
  for (RolloutPath path : {RolloutPath::kRow, RolloutPath::kChain}) {
    EXPECT_THAT(RunRollout(spec, layers, path).values, Pointwise(FloatNear(1e-6), expected));
  }
}

TEST(RolloutTest, IdentityAttentionGivesIdentity) {
  const int n = 6;
  std::vector<std::vector<MatrixF>> layers(4, {MatrixF::Identity(n, n), MatrixF::Identity(n, n)});
  RolloutSpec spec;
  spec.readout.mean_of_rows = true;
  Maps out = RunRollout(spec, layers, RolloutPath::kChain);
  EXPECT_THAT(out.values, Pointwise(FloatNear(1e-6), std::vector<float>(n, 1.0f / n)));
}

TEST(RolloutTest, RowPathEqualsChainPathOnRandomAttention) {
  std::mt19937 rng(7);
  const int n = 31, L = 6, H = 3;
  std::vector<std::vector<MatrixF>> layers(L);
  for (auto& l : layers) {
    for (int h = 0; h < H; ++h) l.push_back(testing::RandomStochastic(n, rng, 3.0f));
  }
  for (int variant = 0; variant < 4; ++variant) {
    RolloutSpec spec;
    spec.readout.prefix = 1;
    spec.readout.grid_h = 5;
    spec.readout.grid_w = 6;
    spec.first_layer = variant == 1 ? 2 : 0;
    spec.last_layer = variant == 1 ? 4 : -1;
    spec.residual = variant == 2 ? 0.0f : 0.3f;
    spec.fusion = variant == 3 ? Fusion::kMax : Fusion::kMean;
    spec.readout.scaling = variant == 3 ? Scaling::kMinMax : Scaling::kNone;
    if (variant == 2) {
      spec.readout.mean_of_rows = true;
    } else {
      spec.readout.rows = {0, 7, 30};
    }
    Maps row = RunRollout(spec, layers, RolloutPath::kRow);
    Maps chain = RunRollout(spec, layers, RolloutPath::kChain);
    EXPECT_EQ(row.shape, chain.shape);
    EXPECT_THAT(row.values, Pointwise(FloatNear(2e-6), chain.values)) << "variant " << variant;
  }
}

TEST(RolloutTest, PerLayerReturnsEveryPartialProduct) {
  std::mt19937 rng(3);
  const int n = 8;
  std::vector<std::vector<MatrixF>> layers;
  for (int l = 0; l < 4; ++l) layers.push_back({testing::RandomStochastic(n, rng)});
  RolloutSpec spec;
  spec.per_layer = true;
  spec.first_layer = 1;
  spec.readout.rows = {0, 5};
  Maps all = RunRollout(spec, layers, RolloutPath::kChain);
  ASSERT_THAT(all.shape, ElementsAre(3, 2, n));
  // Slice l of the per-layer output equals a rollout over layers [1, 1 + l].
  for (int l = 0; l < 3; ++l) {
    RolloutSpec one = spec;
    one.per_layer = false;
    one.last_layer = 1 + l;
    Maps part = RunRollout(one, layers, RolloutPath::kRow);
    std::vector<float> slice(all.values.begin() + l * 2 * n, all.values.begin() + (l + 1) * 2 * n);
    EXPECT_THAT(slice, Pointwise(FloatNear(1e-6), part.values)) << "layer " << l;
  }
}

TEST(RolloutTest, ZeroRowFromMinFusionStaysZeroNotNaN) {
  // Heads attend to disjoint tokens: min fusion is all zero; a = 0 keeps it so.
  const MatrixF h0 = Mat({{1, 0}, {1, 0}}), h1 = Mat({{0, 1}, {0, 1}});
  RolloutSpec spec;
  spec.fusion = Fusion::kMin;
  spec.residual = 0.0f;
  Maps out = RunRollout(spec, {{h0, h1}}, RolloutPath::kChain);
  EXPECT_THAT(out.values, ElementsAre(0.0f, 0.0f));
}

TEST(HeadFuserTest, StripsOfRowsFuseLikeWholeHeadsAndMeasureRows) {
  std::mt19937 rng(5);
  const int n = 23, H = 3;
  std::vector<MatrixF> heads;
  for (int h = 0; h < H; ++h) heads.push_back(testing::RandomStochastic(n, rng));
  heads[1](4, 20) = 0.75f;  // above the diagonal of row 4
  heads[2](9, 3) = -0.5f;
  for (Fusion f : {Fusion::kMean, Fusion::kMax, Fusion::kMin, Fusion::kWeighted}) {
    const std::vector<float> w = {0.5f, 2.0f, 1.0f};
    HeadFuser whole(f, w, H, n), strips(f, w, H, n);
    for (int h = 0; h < H; ++h) whole.AddRows(h, 0, View(heads[h]));
    std::vector<RowStats> stats(n);
    for (int r0 = 0; r0 < n; r0 += 5) {  // strips of 5 rows (the last has 3)
      const int rows = std::min(5, n - r0);
      for (int h = 0; h < H; ++h) {
        const ConstMatrixView strip(heads[h].data() + r0 * n, rows, n, Eigen::OuterStride<>(n));
        strips.AddRows(h, r0, strip, nullptr, h == 1 ? stats.data() + r0 : nullptr, /*upper=*/true);
      }
    }
    EXPECT_TRUE(whole.fused().isApprox(strips.fused(), 1e-6f)) << static_cast<int>(f);
    MatrixF expected = heads[0];
    for (int h = 1; h < H; ++h) {
      switch (f) {
        case Fusion::kMean: expected += heads[h]; break;
        case Fusion::kMax: expected = expected.cwiseMax(heads[h]); break;
        case Fusion::kMin: expected = expected.cwiseMin(heads[h]); break;
        case Fusion::kWeighted:
        case Fusion::kNone: break;
      }
    }
    if (f == Fusion::kWeighted) expected = 0.5f * heads[0] + 2.0f * heads[1] + heads[2];
    EXPECT_TRUE(strips.fused().isApprox(expected, 1e-6f)) << static_cast<int>(f);
    // Stats of head 1, measured while fusing, against a direct computation.
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(stats[i].sum, heads[1].row(i).sum(), 1e-5);
      EXPECT_EQ(stats[i].min, heads[1].row(i).minCoeff());
      const float upper = i + 1 < n ? heads[1].row(i).tail(n - i - 1).maxCoeff() : 0.0f;
      EXPECT_EQ(stats[i].upper_max, upper) << i;
    }
    EXPECT_EQ(stats[4].upper_max, 0.75f);
  }
  std::vector<RowStats> direct(n);
  ComputeRowStats(View(heads[2]), 0, true, direct.data());
  EXPECT_EQ(direct[9].min, -0.5f);
  EXPECT_NEAR(direct[0].sum, 1.0f, 1e-5);
  EXPECT_EQ(direct[n - 1].upper_max, 0.0f);
}

TEST(ReadoutTest, PrefixGridAndScaling) {
  RowVectorF row(5);
  row << 0.5f, 0.1f, 0.2f, 0.3f, 0.4f;
  ReadoutSpec spec;
  spec.prefix = 1;
  spec.grid_h = 2;
  spec.grid_w = 2;
  ASSERT_TRUE(ValidateReadout(spec, 5).ok());
  EXPECT_THAT(MapShape(spec, 5), ElementsAre(2, 2));
  float out[4];
  struct Case {
    Scaling s;
    std::vector<float> expected;
  };
  for (const Case& c : std::vector<Case>{
           {Scaling::kNone, {0.1f, 0.2f, 0.3f, 0.4f}},
           {Scaling::kMax, {0.25f, 0.5f, 0.75f, 1.0f}},
           {Scaling::kMinMax, {0.0f, 1 / 3.0f, 2 / 3.0f, 1.0f}},
           {Scaling::kSum, {0.1f, 0.2f, 0.3f, 0.4f}}}) {
    spec.scaling = c.s;
    WriteMap(spec, row, out);
    EXPECT_THAT(out, Pointwise(FloatNear(1e-6), c.expected)) << static_cast<int>(c.s);
  }
  RowVectorF flat = RowVectorF::Constant(5, 0.2f);
  spec.scaling = Scaling::kMinMax;
  WriteMap(spec, flat, out);
  EXPECT_THAT(out, ElementsAre(0, 0, 0, 0));  // constant map: zeros, not NaN
}

TEST(ValidateRolloutSpecTest, RejectsBadOptionsNamingTheField) {
  auto error = [](const RolloutSpec& s, int L = 4, int H = 2, int m = 10) {
    return std::string(ValidateRolloutSpec(s, L, H, m).message());
  };
  RolloutSpec s;
  EXPECT_TRUE(ValidateRolloutSpec(s, 4, 2, 10).ok());
  s.fusion = Fusion::kWeighted;
  s.head_weights = {1.0f};
  EXPECT_THAT(error(s), HasSubstr("rollout.head_weights: expected 2 weights"));
  s.head_weights = {1.0f, -1.0f};
  EXPECT_THAT(error(s), HasSubstr("head_weights[1]"));
  s.head_weights = {0.0f, 0.0f};
  EXPECT_THAT(error(s), HasSubstr("positive sum"));
  s = RolloutSpec();
  s.head_weights = {1.0f, 1.0f};
  EXPECT_THAT(error(s), HasSubstr("only used with fusion (or head_aggregate) WEIGHTED"));
  s = RolloutSpec();
  s.first_layer = 2;
  s.last_layer = 4;
  EXPECT_THAT(error(s), HasSubstr("rollout.layers: expected 0 <= first <= last < num_layers = 4, got 2:4"));
  s = RolloutSpec();
  s.residual = 1.5f;
  EXPECT_THAT(error(s), HasSubstr("rollout.residual"));
  s = RolloutSpec();
  s.readout.rows = {10};
  EXPECT_THAT(error(s), HasSubstr("readout.rows: row 10 out of range"));
  s = RolloutSpec();
  s.readout.prefix = 1;
  s.readout.grid_h = 3;
  s.readout.grid_w = 4;
  EXPECT_THAT(error(s), HasSubstr("expected valid length - prefix_tokens = 10 - 1 = 9"));
  s = RolloutSpec();
  s.readout.prefix = 10;
  EXPECT_THAT(error(s), HasSubstr("prefix_tokens"));
}

TEST(ChooseRolloutPathTest, FewRowsUseRowPathPerLayerUsesChain) {
  RolloutSpec spec;
  EXPECT_EQ(ChooseRolloutPath(spec, 12, 197), RolloutPath::kRow);
  EXPECT_EQ(ChooseRolloutPath(spec, 32, 2048), RolloutPath::kRow);
  spec.per_layer = true;
  EXPECT_EQ(ChooseRolloutPath(spec, 12, 197), RolloutPath::kChain);
  spec.per_layer = false;
  spec.readout.rows.resize(197);
  for (int i = 0; i < 197; ++i) spec.readout.rows[i] = i;
  EXPECT_EQ(ChooseRolloutPath(spec, 12, 197), RolloutPath::kChain);
}

}  // namespace
}  // namespace attnroll::analysis
