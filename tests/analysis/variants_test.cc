// Rollout variants: pruning, gradient weighting, causal read-out,
// on hand-built cases whose answers are known.
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/analysis/pruning.h"
#include "server/analysis/rollout.h"
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

// layers[l][h] and gradients[l][h] through one SequenceRollout (chain path).
Maps RunVariant(const RolloutSpec& spec, const std::vector<std::vector<MatrixF>>& a,
         const std::vector<std::vector<MatrixF>>* g = nullptr,
         RolloutPath path = RolloutPath::kChain, int64_t* emptied = nullptr) {
  const int L = static_cast<int>(a.size()), H = static_cast<int>(a[0].size());
  const int m = static_cast<int>(a[0][0].rows());
  EXPECT_TRUE(ValidateRolloutSpec(spec, L, H, m).ok()) << ValidateRolloutSpec(spec, L, H, m);
  SequenceRollout r(spec, L, H, m, path);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) {
      if (g == nullptr) {
        r.AddHead(l, h, View(a[l][h]));
      } else {
        const ConstMatrixView gv = View((*g)[l][h]);
        r.AddHead(l, h, View(a[l][h]), &gv);
      }
    }
  }
  if (emptied != nullptr) *emptied = r.emptied_rows();
  return r.Finish();
}

TEST(PruneTest, EachStepByHand) {
  const MatrixF f = Mat({{0.5f, 0.3f, 0.2f}, {0.1f, 0.6f, 0.3f}, {0.25f, 0.25f, 0.5f}});
  PruneSpec spec;
  // discard_ratio 0.4 -> floor(3.6) = 3 lowest of 9: 0.1, 0.2, then 0.25 at flat 6 (before 7).
  spec.discard_ratio = 0.4f;
  MatrixF x = f;
  EXPECT_EQ(Prune(spec, false, x), 0);
  EXPECT_THAT(Flat(x), ElementsAre(0.5f, 0.3f, 0.0f, 0.0f, 0.6f, 0.3f, 0.0f, 0.25f, 0.5f));
  // Entry (0, 0) is never discarded: it is dropped from the list instead.
  MatrixF tiny = Mat({{0.01f, 0.99f}, {0.5f, 0.5f}});
  spec.discard_ratio = 0.25f;  // 1 entry: (0, 0) -> nothing zeroed
  EXPECT_EQ(Prune(spec, false, tiny), 0);
  EXPECT_EQ(tiny(0, 0), 0.01f);

  spec = PruneSpec();
  spec.threshold = 0.3f;
  x = f;
  Prune(spec, true, x);  // rows renormalised: [.5 .3 0]/.8, [0 .6 .3]/.9, [0 0 1]
  EXPECT_THAT(Flat(x), Pointwise(FloatNear(1e-6), {0.625f, 0.375f, 0.0f, 0.0f, 2 / 3.0f, 1 / 3.0f,
                                                   0.0f, 0.0f, 1.0f}));
  spec = PruneSpec();
  spec.mass = 0.7f;  // keep where ascending cumulative share > 0.3
  x = f;
  Prune(spec, false, x);
  // Row 0 ascending .2 .3 .5 -> cum .2 .5 1 -> keep .3, .5. Row 1: .1 .3 .6 -> .1 .4 1 -> keep .3 .6.
  // Row 2: .25 .25 .5 -> .25 .5 1 -> keep the second .25 (column 1) and .5.
  EXPECT_THAT(Flat(x), ElementsAre(0.5f, 0.3f, 0.0f, 0.0f, 0.6f, 0.3f, 0.0f, 0.25f, 0.5f));
  spec = PruneSpec();
  spec.top_k = 1;
  x = f;
  Prune(spec, false, x);  // ties in row 2 are irrelevant (.5 wins)
  EXPECT_THAT(Flat(x), ElementsAre(0.5f, 0, 0, 0, 0.6f, 0, 0, 0, 0.5f));
  spec.top_k = 2;
  x = f;
  Prune(spec, false, x);  // row 2: .5 then the tie .25/.25 -> lower column (0) kept
  EXPECT_THAT(Flat(x), ElementsAre(0.5f, 0.3f, 0, 0, 0.6f, 0.3f, 0.25f, 0, 0.5f));
}

TEST(PruneTest, EmptiedRowsKeepTheirDiagonalAndAreCounted) {
  MatrixF x = Mat({{0.5f, 0.5f}, {0.2f, 0.8f}});
  PruneSpec spec;
  spec.threshold = 0.6f;  // row 0 loses everything
  EXPECT_EQ(Prune(spec, true, x), 1);
  EXPECT_THAT(Flat(x), ElementsAre(1.0f, 0.0f, 0.0f, 1.0f));
  MatrixF zero = MatrixF::Zero(2, 2);  // no mass before pruning: left alone
  EXPECT_EQ(Prune(spec, true, zero), 0);
  EXPECT_TRUE(zero.isZero());
}

TEST(PruneTest, BadSpecsNameTheField) {
  PruneSpec s;
  s.discard_ratio = 1.0f;
  EXPECT_THAT(std::string(ValidatePruneSpec(s).message()), HasSubstr("pruning.discard_ratio"));
  s = PruneSpec();
  s.mass = 1.5f;
  EXPECT_THAT(std::string(ValidatePruneSpec(s).message()), HasSubstr("pruning.mass"));
  s = PruneSpec();
  s.threshold = -1;
  EXPECT_THAT(std::string(ValidatePruneSpec(s).message()), HasSubstr("pruning.threshold"));
}

TEST(GradientRolloutTest, CheferOnIdentityWithUnitGradientDoublesEachLayer) {
  // A = I, G = 1: Ab = mean_h(max(0, I)) = I, At = 2 I, R = 2^L I (unnormalised).
  const int n = 4, L = 3, H = 2;
  std::vector<std::vector<MatrixF>> a(L, std::vector<MatrixF>(H, MatrixF::Identity(n, n)));
  std::vector<std::vector<MatrixF>> g(L, std::vector<MatrixF>(H, MatrixF::Ones(n, n)));
  RolloutSpec spec;
  spec.gradient = GradientRule::kChefer;
  spec.readout.rows = {2};
  for (RolloutPath p : {RolloutPath::kRow, RolloutPath::kChain}) {
    EXPECT_THAT(RunVariant(spec, a, &g, p).values, ElementsAre(0, 0, 8, 0));
  }
  spec.grad_row_normalize = true;  // (I + I) / 2 = I
  EXPECT_THAT(RunVariant(spec, a, &g).values, ElementsAre(0, 0, 1, 0));
}

TEST(GradientRolloutTest, OnlyTheHeadWithAGradientCountsAndNegativesAreClamped) {
  std::mt19937 rng(9);
  const int n = 5, H = 3;
  std::vector<std::vector<MatrixF>> a(2), g(2);
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < H; ++h) {
      a[l].push_back(testing::RandomStochastic(n, rng));
      g[l].push_back(h == 1 ? MatrixF::Constant(n, n, 2.0f) : MatrixF::Zero(n, n));
    }
  }
  g[1][1](0, 3) = -5.0f;  // a negative gradient entry: max(0, G*A) drops it
  // Expected by hand: Ab_l = (2 A[l][1] with the clamped entry zeroed) / H.
  MatrixF r = MatrixF::Identity(n, n);
  for (int l = 0; l < 2; ++l) {
    MatrixF ab = (2.0f / H) * a[l][1];
    if (l == 1) ab(0, 3) = 0.0f;
    r = (MatrixF::Identity(n, n) + ab) * r;
  }
  RolloutSpec spec;
  spec.gradient = GradientRule::kChefer;
  spec.readout.rows = {0, 4};
  std::vector<float> expected = Flat(r.topRows(1));
  std::vector<float> row4 = Flat(r.bottomRows(1));
  expected.insert(expected.end(), row4.begin(), row4.end());
  EXPECT_THAT(RunVariant(spec, a, &g).values, Pointwise(FloatNear(1e-5), expected));
}

TEST(GradientRolloutTest, GradientsPairWithTheirOwnLayer) {
  // Two layers whose gradients select different tokens; pairing them in
  // reverse (vit-explain's bug) would give a different map.
  const MatrixF a = Mat({{0.5f, 0.5f}, {0.5f, 0.5f}});
  const MatrixF g_first = Mat({{1, 0}, {1, 0}}), g_second = Mat({{0, 1}, {0, 1}});
  std::vector<std::vector<MatrixF>> as = {{a}, {a}};
  std::vector<std::vector<MatrixF>> right = {{g_first}, {g_second}}, reversed = {{g_second}, {g_first}};
  RolloutSpec spec;
  spec.gradient = GradientRule::kVitExplain;
  spec.residual = 0.0f;
  // F_1 = [[.5, 0], [.5, 0]] -> rows / sums = [[1, 0], [1, 0]]; F_2 -> [[0, 1], [0, 1]].
  // R = F_2 F_1 = [[1, 0], [1, 0]]: row 0 -> token 0. Reversed: [[0, 1], ...].
  EXPECT_THAT(RunVariant(spec, as, &right).values, ElementsAre(1.0f, 0.0f));
  EXPECT_THAT(RunVariant(spec, as, &reversed).values, ElementsAre(0.0f, 1.0f));
}

TEST(GradientRolloutTest, VitExplainClampsTheFusedProductNotEachHead) {
  // Head terms +0.4 and -0.2 at (0, 1): max(0, mean) = 0.1 but mean(max(0, .)) = 0.2.
  const MatrixF a = Mat({{0.6f, 0.4f}, {0.0f, 1.0f}});
  const MatrixF g0 = Mat({{1, 1}, {1, 1}}), g1 = Mat({{1, -0.5f}, {1, 1}});
  std::vector<std::vector<MatrixF>> as = {{a, a}}, gs = {{g0, g1}};
  RolloutSpec spec;
  spec.residual = 0.0f;
  spec.renormalize = false;
  spec.gradient = GradientRule::kVitExplain;
  EXPECT_THAT(RunVariant(spec, as, &gs).values, Pointwise(FloatNear(1e-6), {0.6f, 0.1f}));
  spec.gradient = GradientRule::kChefer;  // I + mean(max(0, G A)): row 0 = [1.6, 0.2]
  EXPECT_THAT(RunVariant(spec, as, &gs).values, Pointwise(FloatNear(1e-6), {1.6f, 0.2f}));
}

TEST(ReadoutVariantsTest, SinkTokensAreDroppedAndTheRestRenormalised) {
  RowVectorF row(5);
  row << 0.6f, 0.2f, 0.1f, 0.05f, 0.05f;
  ReadoutSpec spec;
  spec.sink = 1;
  float out[5];
  WriteMap(spec, row, out);
  EXPECT_THAT(std::vector<float>(out, out + 5), Pointwise(FloatNear(1e-6), {0.0f, 0.5f, 0.25f, 0.125f, 0.125f}));
  spec.prefix = 2;  // the sink is renormalised away before the prefix drop
  spec.scaling = Scaling::kMax;
  WriteMap(spec, row, out);
  EXPECT_THAT(std::vector<float>(out, out + 3), Pointwise(FloatNear(1e-6), {1.0f, 0.5f, 0.5f}));
  spec = ReadoutSpec();
  spec.last_row = true;
  EXPECT_THAT(ResolvedRows(spec, 7), ElementsAre(6));
  spec.rows = {1};
  EXPECT_THAT(std::string(ValidateReadout(spec, 7).message()), HasSubstr("readout: expected one of rows, mean_of_rows and last_row, got"));
  spec = ReadoutSpec();
  spec.sink = 7;
  EXPECT_THAT(std::string(ValidateReadout(spec, 7).message()), HasSubstr("readout.sink_tokens"));
}

// One layer, one head F, a = 0.5, threshold 0.25, every row read out:
//   F' = [.5 .3 0; 0 .6 .3; 0 0 .6]   (entries < .25 zeroed)
// published (before the residual, vit-explain): At = rownorm(.5 F' + .5 I)
//   row 0 = [.75 .15 0] / .9,  row 1 = [0 .8 .15] / .95,  row 2 = [0 0 1]
// renormalised before the residual: At = rownorm(.5 rownorm(F') + .5 I)
//   row 0 = [.5 + .3125, .1875, 0],  row 1 = [0, .5 + 1/3, 1/6],  row 2 = [0 0 1]
// after the residual: At = .5 F + .5 I = [.75 .15 .1; .05 .8 .15; .1 .1 .8],
//   pruned (< .25) and renormalised: every row keeps only its diagonal -> I.
TEST(PruningInRolloutTest, EachPlacementByHand) {
  const MatrixF f = Mat({{0.5f, 0.3f, 0.2f}, {0.1f, 0.6f, 0.3f}, {0.2f, 0.2f, 0.6f}});
  RolloutSpec spec;
  spec.readout.rows = {0, 1, 2};
  spec.prune.threshold = 0.25f;
  EXPECT_THAT(RunVariant(spec, {{f}}).values,
              Pointwise(FloatNear(1e-6), {0.75f / 0.9f, 0.15f / 0.9f, 0.0f,  //
                                          0.0f, 0.8f / 0.95f, 0.15f / 0.95f,  //
                                          0.0f, 0.0f, 1.0f}));
  spec.prune.renormalize_before_residual = true;
  EXPECT_THAT(RunVariant(spec, {{f}}).values,
              Pointwise(FloatNear(1e-6), {0.8125f, 0.1875f, 0.0f,                     //
                                          0.0f, 0.5f + 1.0f / 3.0f, 1.0f / 6.0f,  //
                                          0.0f, 0.0f, 1.0f}));
  spec.prune.renormalize_before_residual = false;
  spec.prune.threshold_at = PrunePlace::kAfterResidual;
  EXPECT_THAT(RunVariant(spec, {{f}}).values,
              Pointwise(FloatNear(1e-6), {1, 0, 0, 0, 1, 0, 0, 0, 1}));
}

// top_k in its published place prunes At, after the residual; before the
// residual it prunes F, where the diagonal has no head start.
TEST(PruningInRolloutTest, TopKPrunesAtAfterTheResidualByDefault) {
  const MatrixF f = Mat({{0.0f, 0.6f, 0.4f}, {0.3f, 0.3f, 0.4f}, {0.5f, 0.5f, 0.0f}});
  RolloutSpec spec;
  spec.readout.rows = {0, 1, 2};
  spec.prune.top_k = 1;
  // At = .5 F + .5 I = [.5 .3 .2; .15 .65 .2; .25 .25 .5]: the diagonal is the
  // largest entry of every row, so top-1 keeps it: At = I.
  EXPECT_THAT(RunVariant(spec, {{f}}).values, Pointwise(FloatNear(1e-6), {1, 0, 0, 0, 1, 0, 0, 0, 1}));
  // Before the residual: F' = [0 .6 0; 0 0 .4; .5 0 0] (ties: lower column),
  // At = rownorm(.5 F' + .5 I) = [.5 .3 0; 0 .5 .2; .25 0 .5] / row sums.
  spec.prune.top_k_at = PrunePlace::kBeforeResidual;
  EXPECT_THAT(RunVariant(spec, {{f}}).values,
              Pointwise(FloatNear(1e-6), {0.5f / 0.8f, 0.3f / 0.8f, 0.0f,  //
                                          0.0f, 0.5f / 0.7f, 0.2f / 0.7f,  //
                                          0.25f / 0.75f, 0.0f, 0.5f / 0.75f}));
}

// A gradient-weighted layer whose clamped product is zero everywhere adds
// nothing; the rollout says which layers, and a map without mass is counted.
TEST(DegenerateTest, ZeroGradientLayersAndMassLessMapsAreReported) {
  const MatrixF a = Mat({{0.5f, 0.5f}, {0.25f, 0.75f}});
  const MatrixF zero = MatrixF::Zero(2, 2);
  const MatrixF negative = -MatrixF::Ones(2, 2);
  const MatrixF one = MatrixF::Ones(2, 2);
  RolloutSpec spec;
  spec.gradient = GradientRule::kChefer;
  std::vector<std::vector<MatrixF>> g = {{zero}, {one}, {negative}};
  SequenceRollout r(spec, 3, 1, 2, RolloutPath::kChain);
  for (int l = 0; l < 3; ++l) {
    const ConstMatrixView gv = View(g[l][0]);
    r.AddHead(l, 0, View(a), &gv);
  }
  r.Finish();
  EXPECT_THAT(r.zero_layers(), ElementsAre(0, 2));  // G = 0, and max(0, -A) = 0
  EXPECT_EQ(r.zero_maps(), 0);
  // vit_explain, no residual, a zero gradient: At = 0, so the map is all zero.
  spec.gradient = GradientRule::kVitExplain;
  spec.residual = 0.0f;
  SequenceRollout z(spec, 1, 1, 2, RolloutPath::kRow);
  const ConstMatrixView gz = View(zero);
  z.AddHead(0, 0, View(a), &gz);
  Maps zm = z.Finish();
  EXPECT_THAT(zm.values, ElementsAre(0.0f, 0.0f));
  EXPECT_THAT(z.zero_layers(), ElementsAre(0));
  EXPECT_EQ(z.zero_maps(), 1);
  // Head-specific rollout: a layer is degenerate only when it is for every
  // head (here layer 0 for both, layer 1 for head 0 only).
  RolloutSpec per_head;
  per_head.fusion = Fusion::kNone;
  per_head.gradient = GradientRule::kChefer;
  SequenceRollout heads(per_head, 2, 2, 2, RolloutPath::kChain);
  const std::vector<std::vector<MatrixF>> hg = {{zero, zero}, {zero, one}};
  for (int l = 0; l < 2; ++l) {
    for (int h = 0; h < 2; ++h) {
      const ConstMatrixView gv = View(hg[l][h]);
      heads.AddHead(l, h, View(a), &gv);
    }
  }
  heads.Finish();
  EXPECT_THAT(heads.zero_layers(), ElementsAre(0));
}

TEST(PruningInRolloutTest, RowPathEqualsChainPathAndEmptiedRowsAreCounted) {
  std::mt19937 rng(21);
  const int n = 12, L = 4, H = 2;
  std::vector<std::vector<MatrixF>> a(L);
  for (auto& l : a) {
    for (int h = 0; h < H; ++h) l.push_back(testing::RandomStochastic(n, rng, 0.3f));
  }
  RolloutSpec spec;
  spec.prune.discard_ratio = 0.3f;
  spec.prune.top_k = 3;
  spec.prune.threshold = 0.12f;  // diffuse rows: some lose everything
  spec.readout.rows = {0, 11};
  int64_t emptied_row = 0, emptied_chain = 0;
  Maps row = RunVariant(spec, a, nullptr, RolloutPath::kRow, &emptied_row);
  Maps chain = RunVariant(spec, a, nullptr, RolloutPath::kChain, &emptied_chain);
  EXPECT_THAT(row.values, Pointwise(FloatNear(1e-6), chain.values));
  EXPECT_EQ(emptied_row, emptied_chain);
  EXPECT_GT(emptied_row, 0);
}

}  // namespace
}  // namespace attnroll::analysis

namespace attnroll::analysis {
namespace {

TEST(BeyondHeuristicTest, ValueNormsScaleColumnsAndRenormaliseRows) {
  MatrixF a = testing::Mat({{0.5f, 0.25f, 0.25f}, {0.0f, 0.5f, 0.5f}});
  const float norms[3] = {2.0f, 0.0f, 1.0f};
  ApplyValueNorms(norms, 2, 3, 3, a.data());
  // Row 0: [1, 0, .25] / 1.25; row 1: [0, 0, .5] / .5.
  EXPECT_THAT(testing::Flat(a), Pointwise(FloatNear(1e-6), {0.8f, 0.0f, 0.2f, 0.0f, 0.0f, 1.0f}));
  MatrixF z = testing::Mat({{0.0f, 1.0f}});
  const float zero[2] = {1.0f, 0.0f};
  ApplyValueNorms(zero, 1, 2, 2, z.data());  // all mass on a zero-norm token: stays 0
  EXPECT_THAT(testing::Flat(z), ElementsAre(0.0f, 0.0f));
}

TEST(BeyondHeuristicTest, PerRowResidualWeights) {
  MatrixF f = testing::Mat({{0.5f, 0.5f}, {0.5f, 0.5f}});
  const float a[2] = {0.0f, 0.5f};
  ApplyResidual(0.9f, true, f, 1.0f, a);  // the scalar 0.9 is replaced per row
  EXPECT_THAT(testing::Flat(f), Pointwise(FloatNear(1e-6), {0.5f, 0.5f, 0.25f, 0.75f}));
}

}  // namespace
}  // namespace attnroll::analysis

namespace attnroll::analysis {
namespace {

TEST(HeadSpecificTest, EachHeadRollsOutAloneAndTheAggregateCombinesThem) {
  std::mt19937 rng(17);
  const int n = 7, L = 3, H = 3;
  std::vector<std::vector<MatrixF>> a(L);
  for (auto& l : a) {
    for (int h = 0; h < H; ++h) l.push_back(testing::RandomStochastic(n, rng));
  }
  RolloutSpec spec;
  spec.fusion = Fusion::kNone;
  spec.head_aggregate = Fusion::kWeighted;
  spec.head_weights = {0.5f, 0.25f, 0.25f};
  spec.readout.rows = {0, 6};
  for (RolloutPath path : {RolloutPath::kRow, RolloutPath::kChain}) {
    ASSERT_TRUE(ValidateRolloutSpec(spec, L, H, n).ok());
    SequenceRollout all(spec, L, H, n, path);
    for (int l = 0; l < L; ++l) {
      for (int h = 0; h < H; ++h) all.AddHead(l, h, testing::View(a[l][h]));
    }
    Maps aggregate;
    Maps maps = all.Finish(&aggregate);
    ASSERT_THAT(maps.shape, ElementsAre(H, 2, n));
    ASSERT_THAT(aggregate.shape, ElementsAre(2, n));
    std::vector<float> weighted(2 * n, 0.0f);
    for (int h = 0; h < H; ++h) {
      // Head h alone, as a one-head model.
      RolloutSpec one;
      one.readout.rows = {0, 6};
      SequenceRollout single(one, L, 1, n, RolloutPath::kChain);
      for (int l = 0; l < L; ++l) single.AddHead(l, 0, testing::View(a[l][h]));
      Maps expected = single.Finish();
      std::vector<float> got(maps.values.begin() + h * 2 * n, maps.values.begin() + (h + 1) * 2 * n);
      EXPECT_THAT(got, Pointwise(FloatNear(1e-6), expected.values)) << "head " << h;
      for (int i = 0; i < 2 * n; ++i) weighted[i] += spec.head_weights[h] * expected.values[i];
    }
    EXPECT_THAT(aggregate.values, Pointwise(FloatNear(1e-6), weighted));
  }
  spec.head_aggregate = Fusion::kNone;
  EXPECT_THAT(std::string(ValidateRolloutSpec(spec, L, H, n).message()), HasSubstr("rollout.head_aggregate"));
}

}  // namespace
}  // namespace attnroll::analysis

namespace attnroll::analysis {
namespace {

TEST(CausalTest, TriangularProductsMatchDenseOnLowerTriangularAttention) {
  std::mt19937 rng(23);
  const int n = 16, L = 4, H = 2;
  std::vector<std::vector<MatrixF>> a(L);
  for (auto& l : a) {
    for (int h = 0; h < H; ++h) {
      MatrixF m = testing::RandomStochastic(n, rng).triangularView<Eigen::Lower>();
      for (int i = 0; i < n; ++i) m.row(i) /= m.row(i).sum();
      l.push_back(m);
    }
  }
  RolloutSpec dense;
  dense.readout.rows = {n - 1, 3};
  dense.residual = 0.3f;
  RolloutSpec causal = dense;
  causal.causal = true;
  for (RolloutPath p : {RolloutPath::kRow, RolloutPath::kChain}) {
    EXPECT_THAT(RunVariant(causal, a, nullptr, p).values,
                Pointwise(FloatNear(1e-6), RunVariant(dense, a, nullptr, p).values));
  }
  causal.per_layer = true;
  dense.per_layer = true;
  EXPECT_THAT(RunVariant(causal, a).values, Pointwise(FloatNear(1e-6), RunVariant(dense, a).values));
  // Tiny mass above the diagonal (within the tolerance the service allows) is dropped.
  a[1][0](2, 9) = 1e-4f;
  causal.per_layer = dense.per_layer = false;
  Maps c = RunVariant(causal, a);
  a[1][0](2, 9) = 0.0f;
  EXPECT_THAT(c.values, Pointwise(FloatNear(1e-6), RunVariant(dense, a).values));
}

}  // namespace
}  // namespace attnroll::analysis

#include "server/analysis/encoder_decoder.h"

namespace attnroll::analysis {
namespace {

TEST(EncoderDecoderTest, ZeroRelevanceRowsNormaliseToZeroNotNaN) {
  // Zero gradients everywhere: every Ab is 0, R_ee = I and R_dd = I, so
  // R - I has all-zero rows and Rbar takes the 0/0 := 0 branch.
  const int ne = 3, nd = 2, H = 1;
  EncoderDecoderSpec spec;
  EncoderDecoderRelevance r(spec, H, 1, ne, nd);
  const MatrixF enc = MatrixF::Constant(ne, ne, 1.0f / ne), dec = MatrixF::Constant(nd, nd, 0.5f);
  const MatrixF cross = MatrixF::Constant(nd, ne, 1.0f / ne);
  const MatrixF ge = MatrixF::Zero(ne, ne), gd = MatrixF::Zero(nd, nd);
  const MatrixF gx = MatrixF::Ones(nd, ne);  // only the cross layer has a gradient
  const ConstMatrixView vge = testing::View(ge), vgd = testing::View(gd), vgx = testing::View(gx);
  r.AddHead(Stack::kEncoder, 0, testing::View(enc), &vge);
  r.EndLayer(Stack::kEncoder, 0);
  r.AddHead(Stack::kDecoderSelf, 0, testing::View(dec), &vgd);
  r.EndLayer(Stack::kDecoderSelf, 0);
  r.AddHead(Stack::kDecoderCross, 0, testing::View(cross), &vgx);
  r.EndLayer(Stack::kDecoderCross, 0);
  EXPECT_TRUE(r.encoder().isIdentity());
  EXPECT_TRUE(r.decoder().isIdentity());
  // R_de = I^T Ab_cross I = the cross attention itself.
  EXPECT_TRUE(r.decoder_encoder().allFinite());
  EXPECT_TRUE(r.decoder_encoder().isApprox(cross));
}

}  // namespace
}  // namespace attnroll::analysis
