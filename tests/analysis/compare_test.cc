// Comparison metrics (server/analysis/compare.h) against scipy
// (tests/analysis/compare_reference.py, run with Debian's /usr/bin/python3 +
// python3-scipy, as attention_flow_test.cc runs networkx), hand-derived values,
// a brute-force Kendall tau-b, and bad inputs.
#include "server/analysis/compare.h"
#include "tests/testutil/run_command.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#ifndef ATTNROLL_SOURCE_DIR
#error "ATTNROLL_SOURCE_DIR must name the source tree (set by tests/CMakeLists.txt)"
#endif

namespace attnroll::analysis {
namespace {

using Map = std::vector<float>;

// ---- map generators -------------------------------------------------------------

// A saliency-like map: exp(sharpness * N(0, 1)), summing to 1 (floats).
Map Lognormal(int n, uint32_t seed, float sharpness = 1.5f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Map m(n);
  double s = 0;
  for (float& v : m) {
    v = std::exp(sharpness * normal(rng));
    s += v;
  }
  for (float& v : m) v = static_cast<float>(v / s);
  return m;
}

// A Gaussian blob at (r0, c0) on an h x w grid plus a little noise, sum 1.
Map Blob(int h, int w, double r0, double c0, double sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> noise(0.0, 0.02);
  Map m(h * w);
  double s = 0;
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      const double d2 = (r - r0) * (r - r0) + (c - c0) * (c - c0);
      const double v = std::exp(-d2 / (2 * sigma * sigma)) + noise(rng);
      m[r * w + c] = static_cast<float>(v);
      s += v;
    }
  }
  for (float& v : m) v = static_cast<float>(v / s);
  return m;
}

// Values from {0, 1, ..., levels - 1} / 10: many ties (and zeros).
Map Quantised(int n, int levels, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> level(0, levels - 1);
  Map m(n);
  for (float& v : m) v = static_cast<float>(level(rng)) / 10.0f;
  if (std::all_of(m.begin(), m.end(), [](float v) { return v == 0; })) m[0] = 0.1f;
  return m;
}

// Zeroes a fraction of the entries (pruned maps).
Map Sparsify(Map m, double zero_fraction, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (float& v : m)
    if (u(rng) < zero_fraction) v = 0;
  return m;
}

std::vector<uint8_t> RandomRegion(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> r(n);
  for (uint8_t& v : r) v = static_cast<uint8_t>(rng() % 3 == 0 ? 255 : 0);  // any non-zero
  return r;
}

std::vector<uint8_t> LeftHalf(int h, int w) {
  std::vector<uint8_t> r(h * w, 0);
  for (int i = 0; i < h * w; ++i) r[i] = (i % w) < w / 2;
  return r;
}

CompareSpec Grid(int h, int w) {
  CompareSpec spec;
  spec.grid_h = h;
  spec.grid_w = w;
  return spec;
}

Comparison MustCompare(const Map& a, const Map& b, const CompareSpec& spec) {
  absl::StatusOr<Comparison> c = CompareMaps(a, b, spec);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : Comparison{};
}

// ---- scipy reference --------------------------------------------------------------

using ::attnroll::testing::RunCommand;

struct RefCase {
  std::string label;
  Map a, b;
  CompareSpec spec;
  bool emd_linprog = false;  // the full n^2 LP: small grids only
};

using RefValues = std::map<std::string, double>;

// One python run for every case (scipy's import costs ~0.3 s).
std::vector<RefValues> RunReference(const std::vector<RefCase>& cases, std::string* error) {
  char dir_template[] = "/tmp/compare_test.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    *error = "mkdtemp failed";
    return {};
  }
  const std::string path = std::string(dir) + "/cases.txt";
  {
    std::ofstream f(path);
    f.precision(9);  // float round-trips with 9 significant digits
    f << cases.size() << "\n";
    for (const RefCase& c : cases) {
      f << c.a.size() << " " << c.spec.grid_h << " " << c.spec.grid_w << " " << c.spec.top_k << " "
        << c.spec.top_mass << " " << c.spec.ssim_window << " " << (c.emd_linprog ? 1 : 0) << "\n";
      for (size_t i = 0; i < c.a.size(); ++i) f << c.a[i] << (i + 1 < c.a.size() ? " " : "\n");
      for (size_t i = 0; i < c.b.size(); ++i) f << c.b[i] << (i + 1 < c.b.size() ? " " : "\n");
      if (c.spec.region.empty()) {
        f << "-\n";
      } else {
        for (size_t i = 0; i < c.spec.region.size(); ++i)
          f << static_cast<int>(c.spec.region[i]) << (i + 1 < c.spec.region.size() ? " " : "\n");
      }
    }
  }
  const std::string script =
      std::string(ATTNROLL_SOURCE_DIR) + "/tests/analysis/compare_reference.py";
  int status = 0;
  const std::string out = RunCommand("/usr/bin/python3 " + script + " " + path + " 2>&1", &status);
  std::remove(path.c_str());
  rmdir(dir);
  if (status != 0) {
    *error = out;
    return {};
  }
  std::vector<RefValues> values;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key, value;
    fields >> key >> value;
    if (key == "case") {
      values.emplace_back();
    } else if (!key.empty() && !values.empty()) {
      values.back()[key] = std::strtod(value.c_str(), nullptr);  // parses "nan"
    }
  }
  if (values.size() != cases.size()) *error = "expected one block per case, got:\n" + out;
  return values;
}

// Largest |C++ - scipy| per metric over the reference cases (printed).
std::map<std::string, double>& MaxError() {
  static std::map<std::string, double> errors;
  return errors;
}

void Record(const std::string& key, double got, double want) {
  double& e = MaxError()[key];
  e = std::max(e, std::abs(got - want));
}

// A metric that may be undefined: nan in the reference <=> nullopt + a note.
void ExpectOptional(const std::optional<double>& got, const std::string& note,
                    const RefValues& ref, const std::string& key, double tol) {
  ASSERT_TRUE(ref.count(key)) << key << " missing from the reference";
  const double want = ref.at(key);
  if (std::isnan(want)) {
    EXPECT_FALSE(got.has_value()) << key << " = " << got.value_or(0) << ", scipy: undefined";
    EXPECT_FALSE(note.empty()) << key << " undefined without a note";
  } else {
    ASSERT_TRUE(got.has_value()) << key << " undefined (" << note << "), scipy: " << want;
    EXPECT_NEAR(*got, want, tol) << key;
    Record(key, *got, want);
  }
}

void ExpectValue(double got, const RefValues& ref, const std::string& key, double tol) {
  ASSERT_TRUE(ref.count(key)) << key << " missing from the reference";
  EXPECT_NEAR(got, ref.at(key), tol) << key;
  Record(key, got, ref.at(key));
}

std::vector<RefCase> ReferenceCases() {
  std::vector<RefCase> cases;
  auto add = [&](std::string label, Map a, Map b, CompareSpec spec, bool lp) {
    cases.push_back({std::move(label), std::move(a), std::move(b), std::move(spec), lp});
  };
  {  // A fine-tuning-like shift: the blob moves and the background changes.
    CompareSpec s = Grid(14, 14);
    s.top_k = 20;
    s.region = LeftHalf(14, 14);
    add("blob_shift_14x14", Blob(14, 14, 4, 3, 2.0, 1), Blob(14, 14, 8, 10, 2.5, 2), s, true);
  }
  {  // Independent lognormal maps, default k (ceil(n / 10)).
    add("lognormal_10x10_default_k", Lognormal(100, 3), Lognormal(100, 4), Grid(10, 10), true);
  }
  {  // Heavy ties in both maps (and zeros); k = 10 cuts through a tie.
    CompareSpec s = Grid(7, 9);
    s.top_k = 10;
    s.region = RandomRegion(63, 5);
    add("ties_7x9", Quantised(63, 4, 6), Quantised(63, 3, 7), s, true);
  }
  {  // Binary maps: every pair tied in one of them or the other.
    CompareSpec s;
    s.top_mass = 0.5;
    add("binary_flat_50", Quantised(50, 2, 8), Quantised(50, 2, 9), s, false);
  }
  {  // Constant baseline: correlations undefined, the rest defined.
    CompareSpec s = Grid(8, 8);
    s.region = LeftHalf(8, 8);
    add("constant_a_8x8", Map(64, 0.25f), Lognormal(64, 10), s, true);
  }
  {  // Constant candidate.
    add("constant_b_flat_30", Lognormal(30, 11), Map(30, 3.0f), CompareSpec{}, false);
  }
  {  // A sequence: 1 x w grid (EMD = scipy's 1-D Wasserstein), SSIM undefined.
    add("row_1x40", Lognormal(40, 12, 2.0f), Lognormal(40, 13, 2.0f), Grid(1, 40), true);
  }
  {  // h x 1 grid, pruned maps.
    add("column_30x1", Sparsify(Lognormal(30, 14), 0.5, 15), Sparsify(Lognormal(30, 16), 0.5, 17),
        Grid(30, 1), true);
  }
  {  // Pruned maps (70% zeros: disjoint supports), mass 0.9.
    CompareSpec s = Grid(10, 10);
    s.top_mass = 0.9;
    add("sparse_10x10_mass0.9", Sparsify(Lognormal(100, 18), 0.7, 19),
        Sparsify(Lognormal(100, 20), 0.7, 21), s, true);
  }
  {  // Mass 1: every positive entry, no zero.
    CompareSpec s = Grid(12, 12);
    s.top_mass = 1.0;
    add("mass1_12x12", Sparsify(Lognormal(144, 22), 0.3, 23), Sparsify(Lognormal(144, 24), 0.3, 25),
        s, false);
  }
  {  // Flat (no grid), a region of token indices.
    CompareSpec s;
    s.top_mass = 0.5;
    s.region = RandomRegion(300, 26);
    add("flat_300", Lognormal(300, 27), Lognormal(300, 28), s, false);
  }
  {  // Non-square grid, 5 x 5 SSIM window.
    CompareSpec s = Grid(6, 11);
    s.ssim_window = 5;
    s.top_k = 7;
    add("nonsquare_6x11_win5", Blob(6, 11, 2, 3, 1.5, 29), Blob(6, 11, 3, 6, 2.0, 30), s, true);
  }
  {  // b = 3 a (float): sum-normalised metrics ~0, correlations 1, SSIM not 1.
    Map a = Lognormal(81, 31);
    Map b = a;
    for (float& v : b) v *= 3.0f;
    add("scaled_copy_9x9", a, b, Grid(9, 9), true);
  }
  {  // Entries from ~1e-30 to ~1: very peaked maps.
    add("dynamic_range_16x16", Lognormal(256, 32, 12.0f), Lognormal(256, 33, 12.0f), Grid(16, 16),
        false);
  }
  {  // Reversed ranking of distinct values.
    Map a(40);
    for (int i = 0; i < 40; ++i) a[i] = 1.0f + static_cast<float>(i);
    Map b(a.rbegin(), a.rend());
    add("reversed_flat_40", a, b, CompareSpec{}, false);
  }
  {  // ViT-L/14 at 336 px: 24 x 24, an 11 x 11 SSIM window, no LP.
    CompareSpec s = Grid(24, 24);
    s.ssim_window = 11;
    add("blob_24x24_win11", Blob(24, 24, 5, 5, 3.0, 34), Blob(24, 24, 15, 18, 3.0, 35), s, false);
  }
  return cases;
}

TEST(CompareTest, AgreesWithScipy) {
  int status = 0;
  RunCommand("/usr/bin/python3 -c 'import scipy' 2>&1", &status);
  ASSERT_EQ(status, 0) << "/usr/bin/python3 cannot import scipy: install python3-scipy "
                          "(deploy/install-deps.sh)";
  const std::vector<RefCase> cases = ReferenceCases();
  std::string error;
  const std::vector<RefValues> refs = RunReference(cases, &error);
  ASSERT_TRUE(error.empty()) << error;
  int lp_cases = 0, undefined_seen = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const RefCase& c = cases[i];
    const RefValues& ref = refs[i];
    SCOPED_TRACE(c.label);
    const Comparison got = MustCompare(c.a, c.b, c.spec);
    ExpectOptional(got.spearman, got.spearman_note, ref, "spearman", 1e-12);
    ExpectOptional(got.kendall_tau_b, got.kendall_note, ref, "kendall", 1e-12);
    ExpectOptional(got.pearson, got.pearson_note, ref, "pearson", 1e-12);
    undefined_seen += !got.spearman.has_value();
    ExpectValue(got.cosine, ref, "cosine", 1e-12);
    ExpectValue(got.top_k_iou, ref, "top_k_iou", 1e-15);
    ExpectValue(got.top_k_used_a, ref, "top_k_used_a", 0);
    ExpectValue(got.top_k_used_b, ref, "top_k_used_b", 0);
    ExpectValue(got.l1, ref, "l1", 1e-12);
    ExpectValue(got.l2, ref, "l2", 1e-12);
    ExpectValue(got.js_divergence, ref, "js", 1e-12);
    if (c.spec.grid_h > 0) {
      ExpectOptional(got.ssim, got.ssim_note, ref, "ssim", 1e-10);
      ASSERT_TRUE(got.emd.has_value()) << got.emd_note;
      if (c.emd_linprog) {
        ExpectValue(*got.emd, ref, "emd_lp", 1e-9);
        ++lp_cases;
      }
      if (ref.count("emd_1d")) ExpectValue(*got.emd, ref, "emd_1d", 1e-12);
      ASSERT_TRUE(got.com_a.has_value() && got.com_b.has_value() && got.com_shift.has_value());
      ExpectValue(got.com_a->row, ref, "com_a_row", 1e-12);
      ExpectValue(got.com_a->col, ref, "com_a_col", 1e-12);
      ExpectValue(got.com_b->row, ref, "com_b_row", 1e-12);
      ExpectValue(got.com_b->col, ref, "com_b_col", 1e-12);
      ExpectValue(*got.com_shift, ref, "com_shift", 1e-12);
    } else {
      EXPECT_FALSE(got.ssim || got.emd || got.com_shift || got.com_a || got.com_b);
      EXPECT_NE(got.ssim_note.find("grid"), std::string::npos) << got.ssim_note;
      EXPECT_NE(got.emd_note.find("grid"), std::string::npos) << got.emd_note;
    }
    if (!c.spec.region.empty()) {
      ASSERT_TRUE(got.region_share_a && got.region_share_b);
      ExpectValue(*got.region_share_a, ref, "region_share_a", 1e-12);
      ExpectValue(*got.region_share_b, ref, "region_share_b", 1e-12);
    } else {
      EXPECT_FALSE(got.region_share_a || got.region_share_b);
    }
    ASSERT_EQ(got.difference.size(), c.a.size());
    for (size_t j = 0; j < c.a.size(); ++j) EXPECT_EQ(got.difference[j], c.b[j] - c.a[j]);
  }
  for (const auto& [key, error] : MaxError())
    std::printf("[ max err  ] %-15s %.3g\n", key.c_str(), error);
  EXPECT_GE(lp_cases, 8);
  EXPECT_EQ(undefined_seen, 2);  // the two constant-map cases
}

// ---- hand-derived values ------------------------------------------------------------

TEST(CompareTest, IdenticalMaps) {
  const Map a = Blob(14, 14, 6, 7, 2.0, 40);
  CompareSpec spec = Grid(14, 14);
  spec.region = LeftHalf(14, 14);
  const Comparison c = MustCompare(a, a, spec);
  ASSERT_TRUE(c.spearman && c.kendall_tau_b && c.pearson && c.ssim && c.emd && c.com_shift);
  EXPECT_NEAR(*c.spearman, 1.0, 1e-14);
  EXPECT_EQ(*c.kendall_tau_b, 1.0);
  EXPECT_NEAR(*c.pearson, 1.0, 1e-14);
  EXPECT_NEAR(c.cosine, 1.0, 1e-14);
  EXPECT_EQ(c.top_k_iou, 1.0);
  EXPECT_EQ(c.top_k_used_a, 20);  // ceil(196 / 10)
  EXPECT_EQ(c.l1, 0.0);
  EXPECT_EQ(c.l2, 0.0);
  EXPECT_EQ(c.js_divergence, 0.0);
  EXPECT_NEAR(*c.ssim, 1.0, 1e-14);
  EXPECT_EQ(*c.emd, 0.0);
  EXPECT_EQ(*c.com_shift, 0.0);
  EXPECT_EQ(*c.region_share_a, *c.region_share_b);
  for (float d : c.difference) EXPECT_EQ(d, 0.0f);
}

// One unit of mass moved by (dx, dy): EMD and centre-of-mass shift = sqrt(dx^2 + dy^2).
TEST(CompareTest, UnitMassMovedOnTheGrid) {
  const int h = 9, w = 11, r0 = 2, c0 = 3;
  const int moves[][2] = {{1, 0}, {0, 1}, {3, 4}, {-3, 6}, {7, -2}, {-3, -2}, {5, 6}};
  for (const auto& m : moves) {
    const int dx = m[0], dy = m[1];
    SCOPED_TRACE(::testing::Message() << "dx=" << dx << " dy=" << dy);
    Map a(h * w, 0.0f), b(h * w, 0.0f);
    a[r0 * w + c0] = 1.0f;
    b[(r0 + dy) * w + (c0 + dx)] = 0.25f;  // the mass is compared after normalisation
    const Comparison c = MustCompare(a, b, Grid(h, w));
    ASSERT_TRUE(c.emd && c.com_shift) << c.emd_note;
    const double want = std::hypot(dx, dy);
    EXPECT_NEAR(*c.emd, want, 1e-12);
    EXPECT_NEAR(*c.com_shift, want, 1e-15);
    EXPECT_EQ(c.com_b->col - c.com_a->col, dx);
    EXPECT_EQ(c.com_b->row - c.com_a->row, dy);
    EXPECT_EQ(c.l1, 2.0);
    EXPECT_NEAR(c.js_divergence, std::log(2.0), 1e-15);
    EXPECT_EQ(c.cosine, 0.0);
  }
}

TEST(CompareTest, EmdHandCases) {
  struct Case {
    const char* name;
    int h, w;
    std::vector<std::pair<int, float>> a, b;  // (cell, mass)
    double want;
  };
  const Case cases[] = {
      // Outer pair to inner pair on a line: each half moves 1.
      {"line", 1, 4, {{0, 0.5f}, {3, 0.5f}}, {{1, 0.5f}, {2, 0.5f}}, 1.0},
      // One cell to its two neighbours: 1 (not the diagonal).
      {"split", 2, 2, {{0, 1.0f}}, {{1, 0.5f}, {2, 0.5f}}, 1.0},
      // Diagonal neighbour: sqrt(2) (L1 would say 2).
      {"diagonal", 2, 2, {{0, 1.0f}}, {{3, 1.0f}}, std::sqrt(2.0)},
      // Half stays put, half moves (3, 4): 2.5.
      {"half_stays", 5, 5, {{0, 1.0f}}, {{0, 0.5f}, {4 * 5 + 3, 0.5f}}, 2.5},
      // Crossing: two masses swap rows; optimal plan is straight down/up, not crossed.
      {"swap", 3, 3, {{0, 0.5f}, {8, 0.5f}}, {{6, 0.5f}, {2, 0.5f}}, 2.0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Map a(c.h * c.w, 0.0f), b(c.h * c.w, 0.0f);
    for (auto [i, v] : c.a) a[i] += v;
    for (auto [i, v] : c.b) b[i] += v;
    const Comparison got = MustCompare(a, b, Grid(c.h, c.w));
    ASSERT_TRUE(got.emd.has_value()) << got.emd_note;
    EXPECT_NEAR(*got.emd, c.want, 1e-12);
  }
}

TEST(CompareTest, RankCorrelationsWithTiesByHand) {
  // x = [1, 2, 2, 3], y = [1, 3, 2, 2]: pairs (0,1) (0,2) (0,3) concordant,
  // (1,3) discordant, (1,2) tied in x, (2,3) tied in y:
  //   tau_b = (3 - 1) / sqrt((6 - 1) (6 - 1)) = 0.4.
  // Ranks [1, 2.5, 2.5, 4] and [1, 4, 2.5, 2.5]: Spearman = 2.25 / 4.5 = 0.5.
  const Map x = {1, 2, 2, 3}, y = {1, 3, 2, 2};
  const Comparison c = MustCompare(x, y, CompareSpec{});
  ASSERT_TRUE(c.kendall_tau_b && c.spearman && c.pearson);
  EXPECT_NEAR(*c.kendall_tau_b, 0.4, 1e-15);
  EXPECT_NEAR(*c.spearman, 0.5, 1e-15);
  EXPECT_NEAR(*c.pearson, 0.5, 1e-15);  // means 2, centred [-1,0,0,1] . [-1,1,0,0] / 2

  Map up(25), down(25);
  for (int i = 0; i < 25; ++i) {
    up[i] = static_cast<float>(i + 1);
    down[i] = static_cast<float>(25 - i);
  }
  const Comparison r = MustCompare(up, down, CompareSpec{});
  EXPECT_EQ(*r.kendall_tau_b, -1.0);
  EXPECT_NEAR(*r.spearman, -1.0, 1e-15);
  EXPECT_NEAR(*r.pearson, -1.0, 1e-15);
}

// O(n^2) tau-b from the definition, against the O(n log n) implementation.
double BruteKendallTauB(const Map& x, const Map& y) {
  const int n = static_cast<int>(x.size());
  int64_t con = 0, dis = 0, tx = 0, ty = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = i + 1; j < n; ++j) {
      const double s = static_cast<double>(x[i] - x[j]) * static_cast<double>(y[i] - y[j]);
      con += s > 0;
      dis += s < 0;
      tx += x[i] == x[j];
      ty += y[i] == y[j];
    }
  }
  const int64_t n0 = static_cast<int64_t>(n) * (n - 1) / 2;
  return static_cast<double>(con - dis) /
         std::sqrt(static_cast<double>(n0 - tx) * static_cast<double>(n0 - ty));
}

TEST(CompareTest, KendallMatchesBruteForce) {
  for (uint32_t seed = 0; seed < 40; ++seed) {
    const int n = 2 + static_cast<int>(seed * 7 % 150);
    const int levels = 2 + static_cast<int>(seed % 6);
    const Map x = seed % 3 == 0 ? Lognormal(n, seed) : Quantised(n, levels, seed);
    const Map y = Quantised(n, levels + 1, seed + 1000);
    const absl::StatusOr<Comparison> c = CompareMaps(x, y, CompareSpec{});
    ASSERT_TRUE(c.ok()) << c.status();
    const bool constant = std::all_of(x.begin(), x.end(), [&](float v) { return v == x[0]; }) ||
                          std::all_of(y.begin(), y.end(), [&](float v) { return v == y[0]; });
    if (constant) {
      EXPECT_FALSE(c->kendall_tau_b.has_value());
      continue;
    }
    ASSERT_TRUE(c->kendall_tau_b.has_value()) << c->kendall_note;
    EXPECT_NEAR(*c->kendall_tau_b, BruteKendallTauB(x, y), 1e-13) << "seed " << seed << " n " << n;
  }
}

TEST(CompareTest, ConstantMapsGiveNotesNotNaN) {
  const Map flat(16, 0.5f), other = Lognormal(16, 41);
  CompareSpec spec = Grid(4, 4);
  spec.ssim_window = 3;
  Comparison c = MustCompare(flat, other, spec);
  EXPECT_FALSE(c.spearman || c.kendall_tau_b || c.pearson);
  EXPECT_EQ(c.spearman_note, "map a is constant: Spearman undefined");
  EXPECT_EQ(c.kendall_note, "map a is constant: Kendall tau-b undefined");
  EXPECT_EQ(c.pearson_note, "map a is constant: Pearson undefined");
  ASSERT_TRUE(c.ssim && c.emd && c.com_shift);
  EXPECT_TRUE(std::isfinite(*c.ssim));

  c = MustCompare(other, Map(16, 2.0f), spec);
  EXPECT_EQ(c.pearson_note, "map b is constant: Pearson undefined");

  // The same constant: SSIM has data_range 0 and is 1 by convention; the maps
  // are equal as distributions too.
  c = MustCompare(flat, flat, spec);
  EXPECT_EQ(c.spearman_note, "maps a and b are constant: Spearman undefined");
  ASSERT_TRUE(c.ssim.has_value());
  EXPECT_EQ(*c.ssim, 1.0);
  EXPECT_NE(c.ssim_note.find("data_range 0"), std::string::npos) << c.ssim_note;
  EXPECT_EQ(*c.emd, 0.0);
  EXPECT_EQ(c.top_k_iou, 1.0);

  // Different constants: same distribution (p = q), SSIM defined (data_range > 0).
  c = MustCompare(flat, Map(16, 3.0f), spec);
  EXPECT_EQ(c.l1, 0.0);
  EXPECT_EQ(c.js_divergence, 0.0);
  EXPECT_EQ(*c.emd, 0.0);
  ASSERT_TRUE(c.ssim.has_value());
  EXPECT_LT(*c.ssim, 1.0);

  // One entry: every map is constant.
  c = MustCompare(Map{2.0f}, Map{5.0f}, Grid(1, 1));
  EXPECT_FALSE(c.spearman || c.kendall_tau_b || c.pearson);
  EXPECT_EQ(*c.emd, 0.0);
  EXPECT_EQ(c.top_k_iou, 1.0);
  EXPECT_FALSE(c.ssim.has_value());
}

// SSIM from its definition, window by window, two-pass, in long double.
double DirectSsim(const Map& a, const Map& b, int h, int w, int win) {
  long double lo = 1e300L, hi = -1e300L;
  for (size_t i = 0; i < a.size(); ++i) {
    lo = std::min({lo, static_cast<long double>(a[i]), static_cast<long double>(b[i])});
    hi = std::max({hi, static_cast<long double>(a[i]), static_cast<long double>(b[i])});
  }
  const long double c1 = std::pow(0.01L * (hi - lo), 2), c2 = std::pow(0.03L * (hi - lo), 2);
  const long double np = static_cast<long double>(win) * win;
  long double total = 0;
  for (int r0 = 0; r0 + win <= h; ++r0) {
    for (int c0 = 0; c0 + win <= w; ++c0) {
      long double ux = 0, uy = 0, vx = 0, vy = 0, vxy = 0;
      for (int r = r0; r < r0 + win; ++r)
        for (int c = c0; c < c0 + win; ++c) {
          ux += a[r * w + c];
          uy += b[r * w + c];
        }
      ux /= np;
      uy /= np;
      for (int r = r0; r < r0 + win; ++r)
        for (int c = c0; c < c0 + win; ++c) {
          const long double dx = a[r * w + c] - ux, dy = b[r * w + c] - uy;
          vx += dx * dx;
          vy += dy * dy;
          vxy += dx * dy;
        }
      vx /= np - 1;
      vy /= np - 1;
      vxy /= np - 1;
      total += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
    }
  }
  return static_cast<double>(total / ((h - win + 1) * (w - win + 1)));
}

// Near-constant maps far from 0 (a large offset, tiny structure) are where
// E[x^2] - E[x]^2 cancels catastrophically; the implementation must not.
TEST(CompareTest, SsimIsAccurateOnOffsetMaps) {
  for (float offset : {0.0f, 1.0f, 1000.0f}) {
    SCOPED_TRACE(::testing::Message() << "offset " << offset);
    Map a = Blob(15, 13, 4, 4, 2.0, 42), b = Blob(15, 13, 9, 7, 2.0, 43);
    for (float& v : a) v += offset;
    for (float& v : b) v += offset;
    for (int win : {3, 7, 13}) {
      CompareSpec spec = Grid(15, 13);
      spec.ssim_window = win;
      const Comparison c = MustCompare(a, b, spec);
      ASSERT_TRUE(c.ssim.has_value()) << c.ssim_note;
      EXPECT_NEAR(*c.ssim, DirectSsim(a, b, 15, 13, win), 1e-12) << "window " << win;
    }
  }
}

TEST(CompareTest, TopSetsTiesAndMass) {
  // Ties: lower index first. a's top 2 = {0, 1}, b's = {2, 3}.
  const Map a = {1, 1, 1, 1}, b = {0, 0, 1, 1};
  CompareSpec spec;
  spec.top_k = 2;
  Comparison c = MustCompare(a, b, spec);
  EXPECT_EQ(c.top_k_iou, 0.0);
  spec.top_k = 3;  // {0, 1, 2} vs {2, 3, 0}
  c = MustCompare(a, b, spec);
  EXPECT_EQ(c.top_k_iou, 2.0 / 4.0);

  // Mass: the smallest prefix reaching the share; 1.0 keeps no zero.
  // (Exact binary fractions: with 0.2f, 0.3f the float sum is 1 + 1.5e-8 and a
  // share of 0.5 needs two entries. The comparison is exact, in double.)
  const Map m = {0.25f, 0.5f, 0.0f, 0.25f};
  spec = CompareSpec{};
  const std::pair<double, int> want[] = {{0.1, 1}, {0.5, 1}, {0.6, 2}, {0.75, 2}, {0.76, 3},
                                         {1.0, 3}};
  for (auto [mass, size] : want) {
    spec.top_mass = mass;
    c = MustCompare(m, m, spec);
    EXPECT_EQ(c.top_k_used_a, size) << "mass " << mass;
    EXPECT_EQ(c.top_k_iou, 1.0);
  }
  // Default: ceil(n / 10).
  c = MustCompare(Lognormal(21, 1), Lognormal(21, 2), CompareSpec{});
  EXPECT_EQ(c.top_k_used_a, 3);
  EXPECT_EQ(c.top_k_used_b, 3);
}

TEST(CompareTest, RegionShareByHand) {
  CompareSpec spec;
  spec.region = {1, 0, 7, 0};
  const Comparison c = MustCompare(Map{1, 1, 2, 0}, Map{0, 4, 0, 4}, spec);
  EXPECT_EQ(*c.region_share_a, 0.75);
  EXPECT_EQ(*c.region_share_b, 0.0);
}

TEST(CompareTest, SwappingMapsKeepsSymmetricMetrics) {
  const Map a = Blob(12, 12, 3, 3, 2.0, 50), b = Blob(12, 12, 7, 9, 1.5, 51);
  const CompareSpec spec = Grid(12, 12);
  const Comparison ab = MustCompare(a, b, spec), ba = MustCompare(b, a, spec);
  EXPECT_NEAR(*ab.spearman, *ba.spearman, 1e-15);
  EXPECT_EQ(*ab.kendall_tau_b, *ba.kendall_tau_b);
  EXPECT_NEAR(*ab.pearson, *ba.pearson, 1e-15);
  EXPECT_NEAR(ab.l1, ba.l1, 1e-15);
  EXPECT_NEAR(ab.js_divergence, ba.js_divergence, 1e-15);
  EXPECT_NEAR(*ab.ssim, *ba.ssim, 1e-14);
  EXPECT_NEAR(*ab.emd, *ba.emd, 1e-12);
  EXPECT_NEAR(*ab.com_shift, *ba.com_shift, 1e-15);
  EXPECT_EQ(ab.top_k_iou, ba.top_k_iou);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(ab.difference[i], -ba.difference[i]);
}

// ---- bad inputs -----------------------------------------------------------------------

TEST(CompareTest, RejectsBadInputsWithClearMessages) {
  const Map good = Lognormal(16, 60);
  const float nan = std::nanf(""), inf = INFINITY;
  struct Case {
    const char* name;
    Map a, b;
    CompareSpec spec;
    std::vector<std::string> want;  // substrings of the message
  };
  auto spec_with = [](auto f) {
    CompareSpec s;
    f(s);
    return s;
  };
  Map with_nan = good, with_inf = good, negative = good, zeros(16, 0.0f);
  with_nan[5] = nan;
  with_inf[7] = -inf;
  negative[9] = -0.5f;
  const std::vector<Case> cases = {
      {"empty", Map{}, Map{}, {}, {"non-empty", "a = 0"}},
      {"lengths", good, Map(15, 1.0f), {}, {"map b", "16", "15"}},
      {"nan_a", with_nan, good, {}, {"map a", "entry 5", "nan", "finite"}},
      {"inf_b", good, with_inf, {}, {"map b", "entry 7", "inf", "finite"}},
      {"negative", good, negative, {}, {"map b", "entry 9", "-0.5", ">= 0"}},
      {"zero_sum", zeros, good, {}, {"map a", "sum 0", "positive sum"}},
      {"grid_product", good, good, Grid(4, 5), {"grid", "4x5", "20", "16"}},
      {"grid_one_side", good, good, Grid(4, 0), {"grid", "4x0"}},
      {"grid_negative", good, good, Grid(-4, -4), {"grid", "-4x-4"}},
      {"region_length", good, good, spec_with([](CompareSpec& s) { s.region.assign(15, 1); }),
       {"region", "16", "15"}},
      {"top_k_large", good, good, spec_with([](CompareSpec& s) { s.top_k = 17; }),
       {"top_k", "1..16", "17"}},
      {"top_k_negative", good, good, spec_with([](CompareSpec& s) { s.top_k = -1; }),
       {"top_k", "-1"}},
      {"top_mass_range", good, good, spec_with([](CompareSpec& s) { s.top_mass = 1.5; }),
       {"top_mass", "(0, 1]", "1.5"}},
      {"top_mass_nan", good, good, spec_with([](CompareSpec& s) { s.top_mass = std::nan(""); }),
       {"top_mass", "nan"}},
      {"both_top", good, good, spec_with([](CompareSpec& s) {
         s.top_k = 3;
         s.top_mass = 0.5;
       }),
       {"at most one", "top_k = 3", "top_mass = 0.5"}},
      {"ssim_even", good, good, spec_with([](CompareSpec& s) { s.ssim_window = 6; }),
       {"ssim_window", "odd", "6"}},
      {"emd_cap", good, good, spec_with([](CompareSpec& s) { s.emd_max_arcs = -1; }),
       {"emd_max_arcs", "-1"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const absl::StatusOr<Comparison> got = CompareMaps(c.a, c.b, c.spec);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& s : c.want)
      EXPECT_NE(got.status().message().find(s), std::string::npos)
          << "'" << s << "' not in: " << got.status().message();
  }
}

TEST(CompareTest, GridTooSmallForSsimAndEmdCap) {
  const Map a = Lognormal(30, 70), b = Lognormal(30, 71);
  CompareSpec spec = Grid(5, 6);
  Comparison c = MustCompare(a, b, spec);
  EXPECT_FALSE(c.ssim.has_value());
  EXPECT_EQ(c.ssim_note, "SSIM needs a grid of at least 7x7 (the window; ssim_window), got 5x6");
  EXPECT_TRUE(c.emd.has_value());

  spec.emd_max_arcs = 3;
  c = MustCompare(a, b, spec);
  EXPECT_FALSE(c.emd.has_value());
  EXPECT_NE(c.emd_note.find("emd_max_arcs = 3"), std::string::npos) << c.emd_note;
  EXPECT_TRUE(c.com_shift.has_value());  // the rest is still computed
}

// ---- speed, memory, threads ---------------------------------------------------------

double BestMillis(const Map& a, const Map& b, const CompareSpec& spec, int reps,
                  Comparison* out) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<Comparison> c = CompareMaps(a, b, spec);
    const auto t1 = std::chrono::steady_clock::now();
    EXPECT_TRUE(c.ok());
    if (c.ok()) *out = *std::move(c);
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return best;
}

// The audit compares every item: a 14 x 14 (ViT-B/16) or 16 x 16 (ViT-B/14 at
// 224) comparison, EMD included, must be well under 100 ms. Worst case for the
// EMD: two independent dense maps (about half the cells surplus, half deficit).
TEST(CompareTest, EmdIsFastOnViTGrids) {
  for (int side : {14, 16, 24}) {
    const int n = side * side;
    Comparison c;
    const double dense = BestMillis(Lognormal(n, 80), Lognormal(n, 81), Grid(side, side), 5, &c);
    ASSERT_TRUE(c.emd.has_value()) << c.emd_note;
    const double blob = BestMillis(Blob(side, side, 3, 3, 2.0, 82),
                                   Blob(side, side, side - 4, side - 5, 3.0, 83),
                                   Grid(side, side), 5, &c);
    ASSERT_TRUE(c.emd.has_value()) << c.emd_note;
    std::printf("[ timing   ] %dx%d full comparison: dense %.2f ms, blob shift %.2f ms\n", side,
                side, dense, blob);
    if (side <= 16) {
      EXPECT_LT(dense, 100.0);
      EXPECT_LT(blob, 100.0);
    }
  }
}

TEST(CompareTest, LargeMapsStayCheap) {
  // 10^4 entries: flat metrics are O(n log n); the EMD is skipped by the cap.
  const Map a = Lognormal(10000, 90), b = Lognormal(10000, 91);
  Comparison c;
  const double flat = BestMillis(a, b, CompareSpec{}, 3, &c);
  const double grid = BestMillis(a, b, Grid(100, 100), 3, &c);
  std::printf("[ timing   ] 10^4 entries: flat %.2f ms, 100x100 grid %.2f ms (%s)\n", flat, grid,
              c.emd_note.c_str());
  EXPECT_FALSE(c.emd.has_value());
  EXPECT_NE(c.emd_note.find("emd_max_arcs"), std::string::npos);
  EXPECT_TRUE(c.ssim.has_value() && c.com_shift.has_value());
  EXPECT_LT(flat, 100.0);
  EXPECT_LT(grid, 200.0);
  EXPECT_GE(CompareWorkingBytes(10000, Grid(100, 100)), 96 * kDefaultEmdMaxArcs);
  EXPECT_LT(CompareWorkingBytes(10000, CompareSpec{}), 2 << 20);
}

TEST(CompareTest, StopsWhenCancelledInsideTheLongLoops) {
  // A 64 x 64 grid with a 31-cell SSIM window: the comparison polls the
  // cancellation between metrics and once per row of each SSIM pass, and
  // stops at the first "yes".
  const int side = 64;
  const Map a = Lognormal(side * side, 8), b = Lognormal(side * side, 9);
  CompareSpec spec = Grid(side, side);
  spec.ssim_window = 31;
  int polls = 0;
  ASSERT_TRUE(CompareMaps(a, b, spec, [&] { return ++polls < 0; }).ok());
  EXPECT_GT(polls, side);  // inside SSIM, not only between metrics
  for (int stop_at : {1, 3, side / 2, polls}) {
    int seen = 0;
    absl::StatusOr<Comparison> c = CompareMaps(a, b, spec, [&] { return ++seen >= stop_at; });
    EXPECT_EQ(c.status().code(), absl::StatusCode::kCancelled) << stop_at;
    EXPECT_EQ(seen, stop_at);  // nothing more was computed after the "yes"
  }
}

TEST(CompareTest, CostGrowsWithTheWorkItDescribes) {
  CompareSpec flat;
  const double n1 = CompareCost(1000, flat), n10 = CompareCost(10000, flat);
  EXPECT_GT(n10, 10 * n1);  // n log n
  CompareSpec grid = Grid(128, 128);
  grid.ssim_window = 7;
  const double w7 = CompareCost(128 * 128, grid);
  grid.ssim_window = 63;
  const double w63 = CompareCost(128 * 128, grid);
  // SSIM: 7 x 122 x 250 vs 63 x 66 x 194 moment sums, plus the same EMD.
  EXPECT_GT(w63, w7);
  EXPECT_GT(w7, CompareCost(128 * 128, flat));
}

TEST(CompareTest, ConcurrentCallsAgreeWithSerial) {
  const Map a = Blob(14, 14, 4, 4, 2.0, 100), b = Blob(14, 14, 9, 9, 2.0, 101);
  const Comparison serial = MustCompare(a, b, Grid(14, 14));
  std::vector<double> emd(2), ssim(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < 20; ++r) {
        absl::StatusOr<Comparison> c = CompareMaps(a, b, Grid(14, 14));
        if (!c.ok() || !c->emd || !c->ssim) return;
        emd[t] = *c->emd;
        ssim[t] = *c->ssim;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < 2; ++t) {
    EXPECT_EQ(emd[t], *serial.emd);
    EXPECT_EQ(ssim[t], *serial.ssim);
  }
}

}  // namespace
}  // namespace attnroll::analysis
