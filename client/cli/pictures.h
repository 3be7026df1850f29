// The CLI's pictures: a map as a PNG heatmap (over an image when given, with
// a colour bar), and text tokens coloured by saliency (HTML, ANSI). Built on
// client/render.
#ifndef ATTNROLL_CLIENT_CLI_PICTURES_H_
#define ATTNROLL_CLIENT_CLI_PICTURES_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/npy/npy.h"
#include "client/render/colormap.h"
#include "client/render/image.h"

namespace attnroll::cli {

struct PictureOptions {
  std::string png;     // --png OUT.png ("" for none)
  std::string image;   // --image IN.png|IN.jpg
  std::shared_ptr<const render::Image> background;  // the image, once LoadPictureImage read it
  render::Colormap colormap = render::Colormaps()[0];
  double alpha = 0.5;  // --alpha
  std::string tokens;  // --tokens TOKENS.txt
  std::string html;    // --html OUT.html
  bool ansi = false;   // --ansi always, or auto with stdout on a terminal
};

// explain's picture options (each takes a value).
const std::set<std::string>& PictureOptionNames();
// Parses --png, --image, --colormap, --alpha, --tokens, --html, --ansi
// (auto|always|never; auto: stdout is a terminal). Returns "" or the usage
// message of the bad or inconsistent option.
std::string ParsePictureOptions(const std::map<std::string, std::string>& opt, bool stdout_tty,
                                PictureOptions* out);

// Reads --image (when given) into `background`, so a bad image is refused
// before any call is made.
absl::Status LoadPictureImage(PictureOptions* options);

// A written picture's line for the summary ("wrote OUT.png: ...").
struct Written {
  std::string path;
  std::string summary;
};

// Renders `map` (h * w values) over `options.image` (or alone) with
// `colormap`, writes the PNG at `path` with tEXt chunks attnroll.colormap,
// attnroll.min, attnroll.max (the colour bar's ends) and attnroll.grid.
absl::StatusOr<Written> WriteHeatmapPng(const std::string& path, const std::vector<float>& map, int h,
                                        int w, const render::Colormap& colormap,
                                        const PictureOptions& options);

// explain's pictures of its result `out`: the PNG (one map on the h x w grid:
// every leading axis of length 1) and the tokens (HTML file, ANSI on stdout).
// `prefix` tokens of a token file with one line per token of the pass are
// skipped. INVALID_ARGUMENT naming the option, the expected and the seen shape.
absl::StatusOr<std::vector<Written>> WriteExplainPictures(const npy::Array& out, uint32_t grid_h,
                                                          uint32_t grid_w, uint32_t prefix,
                                                          const PictureOptions& options);

}  // namespace attnroll::cli

#endif  // ATTNROLL_CLIENT_CLI_PICTURES_H_
