// Text tokens coloured by their saliency: an HTML page, or ANSI 24-bit
// colours for a terminal. Each token's background is its value's colour
// (values scaled as for a heatmap: min -> first table entry, max -> last);
// its text is black on light colours and white on dark ones.
#ifndef ATTNROLL_CLIENT_RENDER_TOKEN_COLORS_H_
#define ATTNROLL_CLIENT_RENDER_TOKEN_COLORS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/render/colormap.h"

namespace attnroll::render {

// Black (true) or white text on `background`: luma 0.299 R + 0.587 G +
// 0.114 B above 127.5.
bool DarkTextOn(const Rgb& background);

// A standalone HTML page: one <span> per token, its value in the title.
// `tokens` and `values` have the same length (INVALID_ARGUMENT otherwise).
absl::StatusOr<std::string> TokensHtml(const std::vector<std::string>& tokens,
                                       const std::vector<float>& values, const Colormap& map);

// One line: each token on its colour (ESC[48;2;R;G;Bm, ESC[38;2;...m), reset
// after each, separated by spaces.
absl::StatusOr<std::string> TokensAnsi(const std::vector<std::string>& tokens,
                                       const std::vector<float>& values, const Colormap& map);

}  // namespace attnroll::render

#endif  // ATTNROLL_CLIENT_RENDER_TOKEN_COLORS_H_
