// RGB images in memory, read from PNG (libpng) or JPEG (libjpeg) files and
// written as PNG (libpng), with text chunks.
#ifndef ATTNROLL_CLIENT_RENDER_IMAGE_H_
#define ATTNROLL_CLIENT_RENDER_IMAGE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnroll::render {

// 8-bit RGB, row-major, 3 bytes per pixel.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int w, int h, uint8_t fill = 0) : width(w), height(h), rgb(size_t(w) * h * 3, fill) {}
  uint8_t* At(int x, int y) { return &rgb[(size_t(y) * width + x) * 3]; }
  const uint8_t* At(int x, int y) const { return &rgb[(size_t(y) * width + x) * 3]; }
};

// Largest width or height read or written.
inline constexpr int kMaxImageSide = 8192;

// Reads a PNG or JPEG file, told apart by its first bytes (not its name).
// Grey and palette images become RGB; alpha is composited over black.
// NOT_FOUND for a file that cannot be opened; INVALID_ARGUMENT, naming the
// file, for one that is neither, does not decode, or is over kMaxImageSide.
absl::StatusOr<Image> ReadImage(const std::string& path);

// Writes `image` as an 8-bit RGB PNG with the given tEXt chunks (key, value).
absl::Status WritePng(const std::string& path, const Image& image,
                      const std::vector<std::pair<std::string, std::string>>& text = {});

}  // namespace attnroll::render

#endif  // ATTNROLL_CLIENT_RENDER_IMAGE_H_
