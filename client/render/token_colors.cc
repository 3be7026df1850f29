#include "client/render/token_colors.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/render/heatmap.h"

namespace attnroll::render {
namespace {

std::string EscapeHtml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Control bytes (ESC above all) would let a token drive the terminal.
std::string StripControls(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) out += static_cast<char>(c);
  }
  return out;
}

absl::StatusOr<std::vector<double>> Scaled(const std::vector<std::string>& tokens,
                                           const std::vector<float>& values, const Colormap& map,
                                           ValueRange* range) {
  if (tokens.size() != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: expected one per map value, ",
                                                   values.size(), ", got ", tokens.size()));
  }
  return ScaleToUnit(values, map.diverging, range);
}

}  // namespace

bool DarkTextOn(const Rgb& c) { return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 127.5; }

absl::StatusOr<std::string> TokensHtml(const std::vector<std::string>& tokens,
                                       const std::vector<float>& values, const Colormap& map) {
  ValueRange range;
  absl::StatusOr<std::vector<double>> t = Scaled(tokens, values, map, &range);
  if (!t.ok()) return t.status();
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>attnroll saliency</title>\n"
      "<style>body{font-family:sans-serif;line-height:2}span.t{padding:2px 3px;"
      "border-radius:3px}</style></head>\n<body>\n<p>colour map ", map.name, ", from ",
      absl::StrFormat("%.6g", range.lo), " to ", absl::StrFormat("%.6g", range.hi), "</p>\n<p>\n");
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Rgb c = ColormapColor(map, (*t)[i]);
    absl::StrAppendFormat(&out,
                          "<span class=\"t\" style=\"background:#%02x%02x%02x;color:%s\" "
                          "title=\"%.6g\">%s</span>\n",
                          c[0], c[1], c[2], DarkTextOn(c) ? "#000000" : "#ffffff", values[i],
                          EscapeHtml(tokens[i]));
  }
  out += "</p>\n</body></html>\n";
  return out;
}

absl::StatusOr<std::string> TokensAnsi(const std::vector<std::string>& tokens,
                                       const std::vector<float>& values, const Colormap& map) {
  ValueRange range;
  absl::StatusOr<std::vector<double>> t = Scaled(tokens, values, map, &range);
  if (!t.ok()) return t.status();
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Rgb c = ColormapColor(map, (*t)[i]);
    const int fg = DarkTextOn(c) ? 0 : 255;
    if (i > 0) out += ' ';
    absl::StrAppendFormat(&out, "\x1b[48;2;%d;%d;%dm\x1b[38;2;%d;%d;%dm%s\x1b[0m", c[0], c[1], c[2],
                          fg, fg, fg, StripControls(tokens[i]));
  }
  out += '\n';
  return out;
}

}  // namespace attnroll::render
