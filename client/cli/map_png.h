// Maps on their grid as PNG pictures (libpng), for `attnroll monitor --png`.
// Every cell is a square of `CellPixels(h, w)` pixels; the colours are those
// of docs/conventions.md ("Pictures of the maps").
#ifndef ATTNROLL_CLIENT_CLI_MAP_PNG_H_
#define ATTNROLL_CLIENT_CLI_MAP_PNG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace attnroll::cli {

// Pixels per cell side: max(1, 256 / max(h, w)) (integer division).
int CellPixels(int h, int w);

// A map of non-negative mass, grey: round(255 * v / max v) (white = the
// largest cell; all black when every cell is 0). 8-bit grey PNG.
absl::Status WriteMassPng(const std::string& path, const std::vector<float>& map, int h, int w);

// A signed map (a shift): f = v / max |v|; f >= 0 -> (255, g, g) with
// g = round(255 (1 - f)) (red = gained), f < 0 -> (g, g, 255) with
// g = round(255 (1 + f)) (blue = lost); white where v = 0. 8-bit RGB PNG.
absl::Status WriteShiftPng(const std::string& path, const std::vector<float>& map, int h, int w);

}  // namespace attnroll::cli

#endif  // ATTNROLL_CLIENT_CLI_MAP_PNG_H_
