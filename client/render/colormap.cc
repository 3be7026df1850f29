#include "client/render/colormap.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnroll::render {
namespace {
#include "client/render/colormap_tables.inc"
}  // namespace

const std::vector<Colormap>& Colormaps() {
  static const std::vector<Colormap> kMaps = {
      {"viridis", kViridisTable, false}, {"magma", kMagmaTable, false},
      {"inferno", kInfernoTable, false}, {"plasma", kPlasmaTable, false},
      {"gray", kGrayTable, false},       {"coolwarm", kCoolwarmTable, true}};
  return kMaps;
}

std::string ColormapNames() {
  std::string out;
  const auto& maps = Colormaps();
  for (size_t i = 0; i < maps.size(); ++i) {
    if (i > 0) out += i + 1 == maps.size() ? " or " : ", ";
    out += maps[i].name;
  }
  return out;
}

absl::StatusOr<Colormap> FindColormap(const std::string& name, const std::string& field) {
  for (const Colormap& m : Colormaps()) {
    if (name == m.name) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": expected ", ColormapNames(), ", got '", name, "'"));
}

int ColormapIndex(double t) {
  if (!(t >= 0)) return 0;  // negative (and NaN, which maps never hold)
  const double x = t * 256.0;
  if (x >= 255.0 + 1.0) return 255;  // t == 1 is the last entry
  return static_cast<int>(x);
}

Rgb ColormapBytes(const Colormap& map, int index) {
  const double* c = map.table[index];
  return {static_cast<uint8_t>(c[0] * 255.0), static_cast<uint8_t>(c[1] * 255.0),
          static_cast<uint8_t>(c[2] * 255.0)};
}

}  // namespace attnroll::render
