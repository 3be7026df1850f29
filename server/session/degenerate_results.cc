#include "server/session/degenerate_results.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace attnroll::session {

std::string LayerList(const std::vector<int>& layers) {
  std::string out;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    absl::StrAppend(&out, out.empty() ? "" : ", ", layers[i]);
    if (j > i) absl::StrAppend(&out, "..", layers[j]);
    i = j + 1;
  }
  return out;
}

std::vector<std::string> DegenerateMessages(int b, const Degenerate& d) {
  std::vector<std::string> out;
  const auto plural = [](size_t n) { return n == 1 ? "layer " : "layers "; };
  if (!d.zero_gradient_layers.empty()) {
    out.push_back(absl::StrCat(
        "sequence ", b, ": the gradient is zero everywhere in ", plural(d.zero_gradient_layers.size()),
        LayerList(d.zero_gradient_layers),
        ", which adds nothing to the map (is the target logit's head initialised to zero?)"));
  }
  // Layers whose gradient was zero are reported above, not twice.
  std::vector<int> clamped;
  for (int l : d.zero_layers) {
    if (!std::binary_search(d.zero_gradient_layers.begin(), d.zero_gradient_layers.end(), l)) {
      clamped.push_back(l);
    }
  }
  if (!clamped.empty()) {
    out.push_back(absl::StrCat("sequence ", b, ": the gradient-weighted attention is zero everywhere in ",
                               plural(clamped.size()), LayerList(clamped),
                               " (no positive gradient x attention), which adds nothing to the map"));
  }
  if (d.zero_maps > 0) {
    out.push_back(absl::StrCat("sequence ", b, ": ", d.zero_maps, " of ", d.maps,
                               " maps have no mass (every value <= 0)"));
  }
  return out;
}

}  // namespace attnroll::session
