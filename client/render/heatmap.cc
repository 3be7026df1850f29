#include "client/render/heatmap.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnroll::render {
namespace {

// One axis of the resampling: for each output index, the two source indices
// and the weight of the second.
struct Tap {
  int i0, i1;
  double lambda;
};

std::vector<Tap> Taps(int in, int out) {
  std::vector<Tap> taps(out);
  const double scale = static_cast<double>(in) / out;
  for (int x = 0; x < out; ++x) {
    double src = (x + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    int i0 = static_cast<int>(src);
    if (i0 > in - 1) i0 = in - 1;
    const int i1 = i0 < in - 1 ? i0 + 1 : i0;
    taps[x] = {i0, i1, src - i0};
  }
  return taps;
}

uint8_t Blend(uint8_t under, uint8_t over, double alpha) {
  const double v = (1.0 - alpha) * under + alpha * over;
  return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
}

}  // namespace

std::vector<double> ResizeBilinear(const std::vector<double>& grid, int h, int w, int out_h, int out_w) {
  const std::vector<Tap> ys = Taps(h, out_h), xs = Taps(w, out_w);
  std::vector<double> out(size_t(out_h) * out_w);
  for (int y = 0; y < out_h; ++y) {
    const Tap& ty = ys[y];
    const double* r0 = &grid[size_t(ty.i0) * w];
    const double* r1 = &grid[size_t(ty.i1) * w];
    for (int x = 0; x < out_w; ++x) {
      const Tap& tx = xs[x];
      const double top = (1 - tx.lambda) * r0[tx.i0] + tx.lambda * r0[tx.i1];
      const double bottom = (1 - tx.lambda) * r1[tx.i0] + tx.lambda * r1[tx.i1];
      out[size_t(y) * out_w + x] = (1 - ty.lambda) * top + ty.lambda * bottom;
    }
  }
  return out;
}

absl::StatusOr<std::vector<double>> ScaleToUnit(const std::vector<float>& values, bool diverging,
                                                ValueRange* range_out) {
  if (values.empty()) return absl::InvalidArgumentError("map: expected values, got none");
  ValueRange range{values[0], values[0]};
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("map: expected finite values, got ", values[i], " at index ", i));
    }
    range.lo = std::min<double>(range.lo, values[i]);
    range.hi = std::max<double>(range.hi, values[i]);
  }
  if (diverging) {
    const double m = std::max(std::fabs(range.lo), std::fabs(range.hi));
    range = {-m, m};
  }
  std::vector<double> t(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    t[i] = range.hi > range.lo ? (values[i] - range.lo) / (range.hi - range.lo) : (diverging ? 0.5 : 0.0);
  }
  *range_out = range;
  return t;
}

absl::StatusOr<Heatmap> RenderHeatmap(const std::vector<float>& map, int h, int w,
                                      const HeatmapOptions& options, const Image* background) {
  if (h < 1 || w < 1 || map.size() != size_t(h) * w) {
    return absl::InvalidArgumentError(absl::StrCat("map: expected ", h, " x ", w, " = ",
                                                   int64_t{h} * w, " values, got ", map.size()));
  }
  Heatmap out;
  absl::StatusOr<std::vector<double>> t = ScaleToUnit(map, options.colormap.diverging, &out.range);
  if (!t.ok()) return t.status();
  const int width = background ? background->width : w * options.cell_pixels;
  const int height = background ? background->height : h * options.cell_pixels;
  const int gap = std::max(4, width / 50), bar = std::max(8, width / 20);
  if (width < 1 || height < 1 || width + gap + bar > kMaxImageSide || height > kMaxImageSide) {
    return absl::InvalidArgumentError(absl::StrCat("picture: expected at most ", kMaxImageSide,
                                                   " pixels a side, got ", width + gap + bar, " x ", height));
  }
  const std::vector<double> up = ResizeBilinear(*t, h, w, height, width);
  out.map_width = width;
  out.image = Image(width + gap + bar, height, 255);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const Rgb c = ColormapColor(options.colormap, up[size_t(y) * width + x]);
      uint8_t* px = out.image.At(x, y);
      for (int ch = 0; ch < 3; ++ch) {
        px[ch] = background ? Blend(background->At(x, y)[ch], c[ch], options.alpha) : c[ch];
      }
    }
    const int entry = height > 1 ? static_cast<int>(std::lround(255.0 * (height - 1 - y) / (height - 1))) : 255;
    const Rgb c = ColormapBytes(options.colormap, entry);
    for (int x = width + gap; x < width + gap + bar; ++x) std::copy(c.begin(), c.end(), out.image.At(x, y));
  }
  return out;
}

}  // namespace attnroll::render
