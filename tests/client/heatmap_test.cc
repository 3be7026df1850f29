// The heatmap by hand: the resampling's taps, scaling, blending and the
// colour bar's rows. (Pixels against torch's bilinear interpolation and
// matplotlib are checked end to end in tests/e2e/pictures_test.py.)
#include "client/render/heatmap.h"

#include <cmath>

#include "gtest/gtest.h"

namespace attnroll::render {
namespace {

TEST(HeatmapTest, ResizeBilinearHalfPixelCentres) {
  // 1 x 2 -> 1 x 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last).
  const std::vector<double> up = ResizeBilinear({0.0, 1.0}, 1, 2, 1, 4);
  ASSERT_EQ(up.size(), 4u);
  EXPECT_DOUBLE_EQ(up[0], 0.0);
  EXPECT_DOUBLE_EQ(up[1], 0.25);
  EXPECT_DOUBLE_EQ(up[2], 0.75);
  EXPECT_DOUBLE_EQ(up[3], 1.0);
  // An integer factor of 1 is the identity.
  const std::vector<double> same = ResizeBilinear({1, 2, 3, 4, 5, 6}, 2, 3, 2, 3);
  EXPECT_EQ(same, (std::vector<double>{1, 2, 3, 4, 5, 6}));
}

TEST(HeatmapTest, ScalingAndRange) {
  ValueRange r;
  absl::StatusOr<std::vector<double>> t = ScaleToUnit({2, 4, 3}, false, &r);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, (std::vector<double>{0, 1, 0.5}));
  EXPECT_EQ(r.lo, 2);
  EXPECT_EQ(r.hi, 4);
  t = ScaleToUnit({-1, 0.5, 2}, true, &r);  // diverging: [-2, 2], zero at 0.5
  EXPECT_EQ(*t, (std::vector<double>{0.25, 0.625, 1}));
  EXPECT_EQ(r.lo, -2);
  t = ScaleToUnit({3, 3}, false, &r);
  EXPECT_EQ(*t, (std::vector<double>{0, 0}));
  t = ScaleToUnit({0, 0}, true, &r);
  EXPECT_EQ(*t, (std::vector<double>{0.5, 0.5}));
  t = ScaleToUnit({0, NAN}, false, &r);
  EXPECT_EQ(t.status().message(), "map: expected finite values, got nan at index 1");
}

TEST(HeatmapTest, AloneBlendedAndColourBar) {
  const Colormap viridis = Colormaps()[0];
  HeatmapOptions options;
  options.cell_pixels = 4;
  // A 2 x 2 map with one hot cell, no image: 8 x 8 pixels, gap 4, bar 8.
  absl::StatusOr<Heatmap> h = RenderHeatmap({0, 0, 0, 1}, 2, 2, options, nullptr);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->image.width, 8 + 4 + 8);
  EXPECT_EQ(h->image.height, 8);
  EXPECT_EQ(h->map_width, 8);
  auto px = [&](int x, int y) { const uint8_t* p = h->image.At(x, y); return Rgb{p[0], p[1], p[2]}; };
  EXPECT_EQ(px(7, 7), ColormapBytes(viridis, 255));  // inside the hot cell, past the last centre
  EXPECT_EQ(px(0, 0), ColormapBytes(viridis, 0));
  EXPECT_EQ(px(9, 3), (Rgb{255, 255, 255}));  // the gap
  for (int y = 0; y < 8; ++y) {
    EXPECT_EQ(px(12, y), ColormapBytes(viridis, int(std::lround(255.0 * (7 - y) / 7)))) << y;
    EXPECT_EQ(px(19, y), px(12, y));
  }
  // Over a grey image at alpha 0.25: round(0.75 * 100 + 0.25 * colour).
  Image grey(8, 8, 100);
  options.alpha = 0.25;
  h = RenderHeatmap({0, 0, 0, 1}, 2, 2, options, &grey);
  ASSERT_TRUE(h.ok());
  const Rgb hot = ColormapBytes(viridis, 255);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(h->image.At(7, 7)[c], std::lround(75 + 0.25 * hot[c]));
  EXPECT_EQ(RenderHeatmap({0, 1, 2}, 2, 2, options, nullptr).status().message(),
            "map: expected 2 x 2 = 4 values, got 3");
}

}  // namespace
}  // namespace attnroll::render
