// The Compare RPC (compare_reactor): two maps, or two stacks of maps, in one
// request and every metric back. The expected values are derived by hand from
// the definitions in server/analysis/compare.h, on maps simple enough for it.

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cpp/attnroll_client.h"
#include "tests/testutil/metrics_testutil.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

using testing::Fp32Tensor;
using testing::IsOk;
using testing::MapValues;
using testing::ServerTest;
using testing::StatusIs;

constexpr double kTol = 1e-9;

v1::CompareRequest Request(const std::vector<float>& a, const std::vector<float>& b,
                           const std::vector<int64_t>& shape) {
  v1::CompareRequest r;
  *r.mutable_a() = Fp32Tensor(a, shape);
  *r.mutable_b() = Fp32Tensor(b, shape);
  return r;
}

// `maps` h x w maps, one after the other, each with the given masses at
// (row, col).
struct Mass {
  int row, col;
  float value;
};
std::vector<float> GridMaps(int h, int w, const std::vector<std::vector<Mass>>& maps) {
  std::vector<float> v(maps.size() * h * w, 0.0f);
  for (size_t k = 0; k < maps.size(); ++k) {
    for (const Mass& m : maps[k]) v[k * h * w + m.row * w + m.col] = m.value;
  }
  return v;
}

TEST_F(ServerTest, CompareIdenticalAndScaledMapsAgreeOnEveryMetric) {
  // Two flat maps of 6 values ([k, n] = [2, 6]): b's first map is a's, its
  // second is 2a. The metrics of the sum-normalised maps (l1, l2, JS) see no
  // difference at all, nor do the rank and linear correlations or the cosine;
  // only the raw difference map b - a tells them apart.
  const std::vector<float> base = {1, 4, 2, 6, 3, 5};
  std::vector<float> a = base, b = base;
  a.insert(a.end(), base.begin(), base.end());
  for (float v : base) b.push_back(2 * v);
  auto r = client_->Compare(Request(a, b, {2, 6}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->server_version(), ATTNROLL_VERSION);
  ASSERT_EQ(r->comparisons_size(), 2);
  for (int k = 0; k < 2; ++k) {
    const v1::Comparison& c = r->comparisons(k);
    SCOPED_TRACE(k);
    EXPECT_NEAR(c.l1(), 0.0, kTol);
    EXPECT_NEAR(c.l2(), 0.0, kTol);
    EXPECT_NEAR(c.js_divergence(), 0.0, kTol);
    EXPECT_NEAR(c.cosine(), 1.0, kTol);
    for (const v1::MaybeValue& corr : {c.spearman(), c.kendall_tau_b(), c.pearson()}) {
      EXPECT_TRUE(corr.defined()) << corr.note();
      EXPECT_NEAR(corr.value(), 1.0, kTol);
    }
    // Default top-k: ceil(6 / 10) = 1 entry, the largest (index 3) in both.
    EXPECT_EQ(c.top_k_used_a(), 1u);
    EXPECT_EQ(c.top_k_used_b(), 1u);
    EXPECT_EQ(c.top_k_iou(), 1.0);
    // Flat maps: no grid metric, and a note says why.
    for (const v1::MaybeValue& grid : {c.ssim(), c.emd(), c.com_shift()}) {
      EXPECT_FALSE(grid.defined());
      EXPECT_THAT(grid.note(), HasSubstr("needs a grid"));
    }
    EXPECT_FALSE(c.has_com_a());
    EXPECT_FALSE(c.region_share_a().defined());  // no region asked for
    EXPECT_THAT(c.difference().shape(), ElementsAre(6));
  }
  EXPECT_THAT(MapValues(r->comparisons(0).difference()), ElementsAre(0, 0, 0, 0, 0, 0));
  EXPECT_THAT(MapValues(r->comparisons(1).difference()), ElementsAreArray(base));
}

TEST_F(ServerTest, CompareUnitMassMovedOnAGridGivesEmdAndCentreShift) {
  // Three 4 x 8 maps ([k, h, w]: the grid is the tensor's last two sides).
  //   0: a unit mass moved 3 cells along row 2: emd = com_shift = 3.
  //   1: moved from (0, 0) to (3, 4): emd = com_shift = 5 (Euclidean cells).
  //   2: from (0, 0), split in halves to (0, 2) and (2, 0): the EMD moves each
  //      half 2 cells (emd = 2), the centre of mass goes to (1, 1) (sqrt 2).
  const int h = 4, w = 8, n = h * w;
  const std::vector<float> a = GridMaps(h, w, {{{2, 1, 1}}, {{0, 0, 1}}, {{0, 0, 1}}});
  const std::vector<float> b =
      GridMaps(h, w, {{{2, 4, 1}}, {{3, 4, 1}}, {{0, 2, 0.5f}, {2, 0, 0.5f}}});
  v1::CompareRequest req = Request(a, b, {3, h, w});
  req.mutable_options()->set_top_k(1);
  auto r = client_->Compare(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->comparisons_size(), 3);
  struct Expected {
    double emd, com_a_row, com_a_col, com_b_row, com_b_col, com_shift;
  };
  const Expected expected[] = {{3, 2, 1, 2, 4, 3}, {5, 0, 0, 3, 4, 5}, {2, 0, 0, 1, 1, std::sqrt(2.0)}};
  for (int k = 0; k < 3; ++k) {
    const v1::Comparison& c = r->comparisons(k);
    const Expected& e = expected[k];
    SCOPED_TRACE(k);
    ASSERT_TRUE(c.emd().defined()) << c.emd().note();
    EXPECT_NEAR(c.emd().value(), e.emd, 1e-6);
    ASSERT_TRUE(c.com_shift().defined()) << c.com_shift().note();
    EXPECT_NEAR(c.com_shift().value(), e.com_shift, kTol);
    EXPECT_NEAR(c.com_a().row(), e.com_a_row, kTol);
    EXPECT_NEAR(c.com_a().col(), e.com_a_col, kTol);
    EXPECT_NEAR(c.com_b().row(), e.com_b_row, kTol);
    EXPECT_NEAR(c.com_b().col(), e.com_b_col, kTol);
    // The grid is smaller than the default 7 x 7 SSIM window.
    EXPECT_FALSE(c.ssim().defined());
    EXPECT_THAT(c.ssim().note(), HasSubstr("SSIM needs a grid of at least 7x7"));
    EXPECT_THAT(c.difference().shape(), ElementsAre(h, w));
    EXPECT_EQ(c.top_k_used_a(), 1u);
    EXPECT_EQ(c.top_k_iou(), 0.0);  // the top entries are in different cells
  }
  // Disjoint supports, whichever way b's mass is spread: p and q differ by all
  // their mass (l1 = 2), share nothing (cosine 0), and JS reaches its maximum ln 2.
  for (const v1::Comparison& c : r->comparisons()) {
    EXPECT_NEAR(c.l1(), 2.0, kTol);
    EXPECT_NEAR(c.cosine(), 0.0, kTol);
    EXPECT_NEAR(c.js_divergence(), std::log(2.0), kTol);
  }
  // Maps 0 and 1 are two one-hot vectors of n = 32: l2 = sqrt 2, and the
  // ranks are an affine function of the values, so Spearman = Pearson =
  // -1 / (n - 1); Kendall: one discordant pair, n - 1 untied pairs in each map,
  // -1 / (n - 1) too.
  for (int k = 0; k < 2; ++k) {
    const v1::Comparison& c = r->comparisons(k);
    SCOPED_TRACE(k);
    EXPECT_NEAR(c.l2(), std::sqrt(2.0), kTol);
    for (const v1::MaybeValue& corr : {c.spearman(), c.kendall_tau_b(), c.pearson()}) {
      EXPECT_TRUE(corr.defined()) << corr.note();
      EXPECT_NEAR(corr.value(), -1.0 / (n - 1), kTol);
    }
    std::vector<float> difference(n, 0.0f);
    for (int i = 0; i < n; ++i) difference[i] = b[k * n + i] - a[k * n + i];
    EXPECT_THAT(MapValues(c.difference()), ElementsAreArray(difference));
  }

  // The same first map sent flat with the grid in the options: the same EMD.
  v1::CompareRequest flat = Request(std::vector<float>(a.begin(), a.begin() + n),
                                    std::vector<float>(b.begin(), b.begin() + n), {n});
  flat.mutable_options()->set_grid_height(h);
  flat.mutable_options()->set_grid_width(w);
  auto f = client_->Compare(flat);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->comparisons_size(), 1);
  EXPECT_NEAR(f->comparisons(0).emd().value(), 3.0, 1e-6);
  EXPECT_THAT(f->comparisons(0).difference().shape(), ElementsAre(h, w));
}

TEST_F(ServerTest, CompareBadInputsGetInvalidArgumentNamingTheField) {
  const v1::CompareRequest good = Request({1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1}, {2, 3});
  ASSERT_THAT(client_->Compare(good), IsOk());
  struct Case {
    std::function<void(v1::CompareRequest*)> mutate;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](v1::CompareRequest* r) { *r->mutable_b() = Fp32Tensor({6, 5, 4, 3, 2, 1}, {3, 2}); },
       "b.shape: expected a's shape [2, 3], got [3, 2]"},
      {[](v1::CompareRequest* r) { r->mutable_a()->set_dtype(static_cast<v1::DType>(7)); },
       "a.dtype: expected FP32, FP16 or BF16, got 7"},
      {[](v1::CompareRequest* r) { r->mutable_b()->mutable_data()->resize(20); },
       "b.data: expected 6 elements x 4 bytes (FP32) = 24 bytes, got 20"},
      {[](v1::CompareRequest* r) { r->clear_b(); }, "b.dtype: expected FP32, FP16 or BF16, got 0"},
      {[](v1::CompareRequest* r) { *r = Request({1}, {1}, {1, 1, 1, 1}); },
       "a.shape: expected [n], [k, n], [h, w] (with a grid) or [k, h, w], got [1, 1, 1, 1]"},
      {[](v1::CompareRequest* r) { *r = Request({}, {}, {0}); }, "a: expected at least one value, got none"},
      {[](v1::CompareRequest* r) { r->mutable_options()->set_grid_height(2); },
       "options.grid: height and width must both be set, got 2x0"},
      {[](v1::CompareRequest* r) {
         r->mutable_options()->set_grid_height(2);
         r->mutable_options()->set_grid_width(2);
       },
       "options.grid: 2x2 does not divide the 6 values of a [2, 3]"},
      {[](v1::CompareRequest* r) { reinterpret_cast<float*>(r->mutable_b()->mutable_data()->data())[5] = -1; },
       "map 1: map b: entry 2 is -1, expected >= 0"},
      {[](v1::CompareRequest* r) { *r->mutable_a() = Fp32Tensor({0, 0, 0, 1, 1, 1}, {2, 3}); },
       "map 0: map a: every entry is 0 (sum 0), expected a positive sum"},
      {[](v1::CompareRequest* r) { *r->mutable_options()->mutable_region() = Fp32Tensor({1, 0}, {2}); },
       "options.region: expected 3 values (one per map entry), got 2"},
      {[](v1::CompareRequest* r) { r->mutable_options()->set_top_k(4); },
       "top_k: expected 0 (unset) or 1..3 (the map length), got 4"},
      {[](v1::CompareRequest* r) { r->mutable_options()->set_ssim_window(4); },
       "ssim_window: expected an odd size >= 3, got 4"},
  };
  for (const Case& c : cases) {
    v1::CompareRequest r = good;
    c.mutate(&r);
    EXPECT_THAT(client_->Compare(r), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.needle)));
  }
  ExpectMemoryReleased();
}

TEST_F(ServerTest, CompareOverTheServerLimitsGetsResourceExhaustedAndReleasesItsMemory) {
  runtime::ServerConfig c = Config();
  c.max_memory_bytes = 16 << 20;
  c.limits.max_tokens = 64;  // at most 64^2 = 4096 values a comparison
  StartServer(c);
  // Two 32 x 32 maps: the EMD's transport problem is budgeted at its cap of
  // 2^18 arcs (~96 bytes each: ~25 MB), over the 16 MiB budget.
  const int side = 32, n = side * side;
  std::vector<float> a(n), b(n);
  for (int i = 0; i < n; ++i) {
    a[i] = static_cast<float>(1 + i % 7);
    b[i] = static_cast<float>(1 + i % 5);
  }
  EXPECT_THAT(client_->Compare(Request(a, b, {1, side, side})),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("memory: the comparison needs"),
                             HasSubstr("of the server's max_memory_bytes of 16777216"))));
  // The same values as flat maps need no transport problem and fit.
  auto flat = client_->Compare(Request(a, b, {n}));
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_FALSE(flat->comparisons(0).emd().defined());
  // More values than max_tokens^2.
  std::vector<float> many(5000, 1.0f);
  EXPECT_THAT(client_->Compare(Request(many, many, {5000})),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("a: 5000 values exceed the server limit of max_tokens^2 = 4096")));
  ExpectMemoryReleased();
  // Nothing is left reserved: a comparison that fits still runs.
  EXPECT_THAT(client_->Compare(Request({1, 2, 3}, {3, 2, 1}, {3})), IsOk());
  ExpectMemoryReleased();
}

// Every comparison's work is estimated before it runs: over the server's
// max_compare_cost it is refused at once, naming the limit.
TEST_F(ServerTest, CompareOverItsCostLimitIsRefusedBeforeItRuns) {
  runtime::ServerConfig c = Config();
  c.limits.max_compare_cost = 1e5;
  StartServer(c);
  const int side = 32, n = side * side;
  std::vector<float> a(n), b(n);
  for (int i = 0; i < n; ++i) {
    a[i] = static_cast<float>(1 + i % 7);
    b[i] = static_cast<float>(1 + i % 5);
  }
  EXPECT_THAT(client_->Compare(Request(a, b, {1, side, side})),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       AllOf(HasSubstr("compare: 1 comparisons of 1024-value maps are estimated at"),
                             HasSubstr("over the server's max_compare_cost of 1e+05"))));
  EXPECT_EQ(testing::MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "limits"}}), 1);
  // A small comparison still fits.
  EXPECT_THAT(client_->Compare(Request({1, 2, 3}, {3, 2, 1}, {3})), IsOk());
  ExpectMemoryReleased();
}

}  // namespace
}  // namespace attnroll::rpc
