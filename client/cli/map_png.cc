#include "client/cli/map_png.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace attnroll::cli {
namespace {

absl::Status CheckShape(const std::vector<float>& map, int h, int w) {
  if (h <= 0 || w <= 0 || static_cast<int64_t>(map.size()) != int64_t{h} * w) {
    return absl::InvalidArgumentError(absl::StrCat("map: expected ", h, "x", w, " = ", int64_t{h} * w,
                                                   " values, got ", map.size()));
  }
  for (float v : map) {
    if (!std::isfinite(v)) return absl::InvalidArgumentError("map: expected finite values, got NaN or Inf");
  }
  return absl::OkStatus();
}

uint8_t Level(double f) { return static_cast<uint8_t>(std::clamp(std::lround(255.0 * f), 0L, 255L)); }

// Writes `cells` (channels bytes per cell, row-major h x w) scaled up.
absl::Status Write(const std::string& path, const std::vector<uint8_t>& cells, int channels, int h, int w) {
  const int s = CellPixels(h, w);
  const int width = w * s;
  const int height = h * s;
  std::vector<uint8_t> pixels(static_cast<size_t>(width) * height * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      std::memcpy(&pixels[(static_cast<size_t>(y) * width + x) * channels],
                  &cells[(static_cast<size_t>(y / s) * w + x / s) * channels], channels);
    }
  }
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&image, path.c_str(), 0, pixels.data(), width * channels, nullptr)) {
    const std::string why = image.message;
    png_image_free(&image);
    return absl::UnavailableError(absl::StrCat(path, ": cannot write the PNG (", why, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

int CellPixels(int h, int w) { return std::max(1, 256 / std::max(h, w)); }

absl::Status WriteMassPng(const std::string& path, const std::vector<float>& map, int h, int w) {
  if (absl::Status s = CheckShape(map, h, w); !s.ok()) return s;
  float top = 0;
  for (float v : map) top = std::max(top, v);
  std::vector<uint8_t> cells(map.size());
  for (size_t i = 0; i < map.size(); ++i) cells[i] = top > 0 ? Level(std::max(0.0f, map[i]) / double{top}) : 0;
  return Write(path, cells, 1, h, w);
}

absl::Status WriteShiftPng(const std::string& path, const std::vector<float>& map, int h, int w) {
  if (absl::Status s = CheckShape(map, h, w); !s.ok()) return s;
  float top = 0;
  for (float v : map) top = std::max(top, std::abs(v));
  std::vector<uint8_t> cells(map.size() * 3);
  for (size_t i = 0; i < map.size(); ++i) {
    const double f = top > 0 ? map[i] / double{top} : 0;
    uint8_t* c = &cells[i * 3];
    if (f >= 0) {
      c[0] = 255;
      c[1] = c[2] = Level(1 - f);
    } else {
      c[0] = c[1] = Level(1 + f);
      c[2] = 255;
    }
  }
  return Write(path, cells, 3, h, w);
}

}  // namespace attnroll::cli
