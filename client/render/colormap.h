// Colour maps: matplotlib's 256-entry lookup tables (generated into
// colormap_tables.inc by gen_colormaps.py) and matplotlib's rule for mapping
// a value in [0, 1] to an entry.
#ifndef ATTNROLL_CLIENT_RENDER_COLORMAP_H_
#define ATTNROLL_CLIENT_RENDER_COLORMAP_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnroll::render {

using Rgb = std::array<uint8_t, 3>;

struct Colormap {
  const char* name;
  const double (*table)[3];  // 256 entries, RGB in [0, 1]
  bool diverging;            // centred on zero (for signed maps)
};

// Every map by name, in the order of ColormapNames().
const std::vector<Colormap>& Colormaps();
// "viridis, magma, inferno, plasma, gray or coolwarm".
std::string ColormapNames();
// The map called `name`; INVALID_ARGUMENT naming `field`, the names and `name`.
absl::StatusOr<Colormap> FindColormap(const std::string& name, const std::string& field);

// matplotlib's Colormap.__call__ for a float in [0, 1]: floor(t * 256),
// 1.0 (and above) -> 255, below 0 -> 0.
int ColormapIndex(double t);
// matplotlib's bytes=True: (table * 255).astype(uint8), i.e. truncated.
Rgb ColormapBytes(const Colormap& map, int index);
// ColormapBytes(map, ColormapIndex(t)).
inline Rgb ColormapColor(const Colormap& map, double t) { return ColormapBytes(map, ColormapIndex(t)); }

}  // namespace attnroll::render

#endif  // ATTNROLL_CLIENT_RENDER_COLORMAP_H_
