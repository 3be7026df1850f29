// A saliency map as a picture: the map's cells scaled to [0, 1], upsampled
// bilinearly to the picture's size, coloured by a colour map, alpha-blended
// over an image (when there is one), with a colour bar on the right.
#ifndef ATTNROLL_CLIENT_RENDER_HEATMAP_H_
#define ATTNROLL_CLIENT_RENDER_HEATMAP_H_

#include <vector>

#include "absl/status/statusor.h"
#include "client/render/colormap.h"
#include "client/render/image.h"

namespace attnroll::render {

struct HeatmapOptions {
  Colormap colormap = Colormaps()[0];  // viridis
  // Weight of the heatmap over the image: out = (1 - alpha) image + alpha heat.
  double alpha = 0.5;
  // Size without an image: every cell becomes this many pixels a side.
  int cell_pixels = 16;
};

// The value range the colours span: [min, max] of the map; for a diverging
// colour map [-m, m] with m = max |value| (zero in the middle).
struct ValueRange {
  double lo = 0;
  double hi = 0;
};

struct Heatmap {
  Image image;       // the picture, colour bar included
  int map_width = 0;  // the heatmap's part: x in [0, map_width)
  ValueRange range;
};

// Scales values to t in [0, 1]: t = (v - lo) / (hi - lo) over `range` (0
// when hi == lo; 0.5 for a diverging map). INVALID_ARGUMENT naming the first
// non-finite value.
absl::StatusOr<std::vector<double>> ScaleToUnit(const std::vector<float>& values, bool diverging,
                                                ValueRange* range);

// Bilinear resampling of an h x w grid to out_h x out_w with half-pixel
// centres (align_corners=False: source = (x + 0.5) * w / out_w - 0.5, clamped
// at 0; torch.nn.functional.interpolate's and OpenCV's rule). Row-major.
std::vector<double> ResizeBilinear(const std::vector<double>& grid, int h, int w, int out_h, int out_w);

// `map` holds h * w values (row-major). Each cell is scaled to t = (v - lo) /
// (hi - lo) (0 when hi == lo; 0.5 for a diverging map), the t grid is resized
// to the image (or to h * cell_pixels x w * cell_pixels without one), coloured
// (ColormapColor), and blended: round((1 - alpha) image + alpha colour) per
// channel (the colour alone without an image). The colour bar, a column
// max(8, W / 20) pixels wide after a white gap of max(4, W / 50), runs from
// the last table entry at the top row to the first at the bottom row (row y
// has entry round(255 (H - 1 - y) / (H - 1))). INVALID_ARGUMENT for a map
// with non-finite values or a size that does not fit.
absl::StatusOr<Heatmap> RenderHeatmap(const std::vector<float>& map, int h, int w,
                                      const HeatmapOptions& options, const Image* background);

}  // namespace attnroll::render

#endif  // ATTNROLL_CLIENT_RENDER_HEATMAP_H_
