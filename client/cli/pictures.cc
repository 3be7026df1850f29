#include "client/cli/pictures.h"

#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/render/heatmap.h"
#include "client/render/token_colors.h"

namespace attnroll::cli {
namespace {

// One map: every axis but the last `keep` has length 1.
bool OneMap(const std::vector<int64_t>& shape, size_t keep) {
  if (shape.size() < keep) return false;
  for (size_t i = 0; i + keep < shape.size(); ++i) {
    if (shape[i] != 1) return false;
  }
  return true;
}

absl::StatusOr<std::vector<std::string>> ReadTokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<std::string> tokens;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    tokens.push_back(line);
  }
  return tokens;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.flush();
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  return absl::OkStatus();
}

}  // namespace

const std::set<std::string>& PictureOptionNames() {
  static const std::set<std::string> kNames = {"png", "image", "colormap", "alpha",
                                               "tokens", "html", "ansi"};
  return kNames;
}

std::string ParsePictureOptions(const std::map<std::string, std::string>& opt, bool stdout_tty,
                                PictureOptions* out) {
  auto get = [&](const char* name) -> const std::string* {
    auto it = opt.find(name);
    return it == opt.end() ? nullptr : &it->second;
  };
  if (const std::string* v = get("png")) out->png = *v;
  if (const std::string* v = get("image")) out->image = *v;
  if (const std::string* v = get("tokens")) out->tokens = *v;
  if (const std::string* v = get("html")) out->html = *v;
  if (const std::string* v = get("colormap")) {
    absl::StatusOr<render::Colormap> map = render::FindColormap(*v, "--colormap");
    if (!map.ok()) return std::string(map.status().message());
    out->colormap = *map;
  }
  if (const std::string* v = get("alpha")) {
    if (!absl::SimpleAtod(*v, &out->alpha) || !(out->alpha >= 0 && out->alpha <= 1)) {
      return "--alpha: expected a number in [0, 1], got '" + *v + "'";
    }
  }
  std::string ansi = "auto";
  if (const std::string* v = get("ansi")) ansi = *v;
  if (ansi != "auto" && ansi != "always" && ansi != "never") {
    return "--ansi: expected auto, always or never, got '" + ansi + "'";
  }
  const bool has_png = !out->png.empty(), has_tokens = !out->tokens.empty();
  if (!has_png && (get("image") || get("alpha"))) return "--image and --alpha are only used with --png";
  if (!has_tokens && (get("html") || get("ansi"))) return "--html and --ansi are only used with --tokens";
  if (!has_png && !has_tokens && get("colormap")) return "--colormap is only used with --png or --tokens";
  out->ansi = has_tokens && (ansi == "always" || (ansi == "auto" && stdout_tty));
  if (has_tokens && out->html.empty() && !out->ansi) {
    return "--tokens needs --html OUT.html or --ansi always (stdout is not a terminal)";
  }
  return "";
}

absl::Status LoadPictureImage(PictureOptions* options) {
  if (options->image.empty() || options->background) return absl::OkStatus();
  absl::StatusOr<render::Image> image = render::ReadImage(options->image);
  if (!image.ok()) return image.status();
  options->background = std::make_shared<const render::Image>(std::move(*image));
  return absl::OkStatus();
}

absl::StatusOr<Written> WriteHeatmapPng(const std::string& path, const std::vector<float>& map, int h,
                                        int w, const render::Colormap& colormap,
                                        const PictureOptions& options) {
  std::shared_ptr<const render::Image> background = options.background;
  if (!background && !options.image.empty()) {
    absl::StatusOr<render::Image> image = render::ReadImage(options.image);
    if (!image.ok()) return image.status();
    background = std::make_shared<const render::Image>(std::move(*image));
  }
  render::HeatmapOptions heat;
  heat.colormap = colormap;
  heat.alpha = options.alpha;
  absl::StatusOr<render::Heatmap> picture = render::RenderHeatmap(map, h, w, heat, background.get());
  if (!picture.ok()) return picture.status();
  const std::string lo = absl::StrFormat("%.9g", picture->range.lo);
  const std::string hi = absl::StrFormat("%.9g", picture->range.hi);
  if (absl::Status st = render::WritePng(path, picture->image,
                                         {{"attnroll.colormap", colormap.name},
                                          {"attnroll.min", lo},
                                          {"attnroll.max", hi},
                                          {"attnroll.grid", absl::StrCat(h, "x", w)}});
      !st.ok()) {
    return st;
  }
  return Written{path, absl::StrCat(picture->image.width, " x ", picture->image.height, " PNG, the ", h,
                                    " x ", w, " map ", background ? "over " + options.image : "alone",
                                    ", ", colormap.name, " from ", lo, " (bottom of the bar) to ", hi,
                                    " (top)")};
}

absl::StatusOr<std::vector<Written>> WriteExplainPictures(const npy::Array& out, uint32_t grid_h,
                                                          uint32_t grid_w, uint32_t prefix,
                                                          const PictureOptions& options) {
  std::vector<Written> written;
  const std::string shape = absl::StrCat("[", absl::StrJoin(out.shape, ", "), "]");
  if (!options.png.empty()) {
    if (grid_h == 0 || !OneMap(out.shape, 2)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--png: expected one map on a grid ([1, h, w]: one row, one sequence, --grid HxW), got shape ",
          shape));
    }
    absl::StatusOr<Written> w = WriteHeatmapPng(options.png, out.values, static_cast<int>(grid_h),
                                                static_cast<int>(grid_w), options.colormap, options);
    if (!w.ok()) return w.status();
    written.push_back(*w);
  }
  if (!options.tokens.empty()) {
    if (!OneMap(out.shape, grid_h > 0 ? 2 : 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tokens: expected one map ([1, n-P]: one row, one sequence), got shape ", shape));
    }
    absl::StatusOr<std::vector<std::string>> tokens = ReadTokens(options.tokens);
    if (!tokens.ok()) return tokens.status();
    const size_t values = out.values.size();
    if (tokens->size() == values + prefix && prefix > 0) {
      tokens->erase(tokens->begin(), tokens->begin() + prefix);
    } else if (tokens->size() != values) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tokens: ", options.tokens, ": expected one token per line for each of the ", values,
          " map values", prefix > 0 ? absl::StrCat(" (or ", values + prefix, " with the ", prefix,
                                                   " prefix tokens first)")
                                    : "",
          ", got ", tokens->size(), " lines"));
    }
    if (!options.html.empty()) {
      absl::StatusOr<std::string> html = render::TokensHtml(*tokens, out.values, options.colormap);
      if (!html.ok()) return html.status();
      if (absl::Status st = WriteText(options.html, *html); !st.ok()) return st;
      written.push_back({options.html, absl::StrCat(values, " tokens coloured by ", options.colormap.name)});
    }
    if (options.ansi) {
      absl::StatusOr<std::string> ansi = render::TokensAnsi(*tokens, out.values, options.colormap);
      if (!ansi.ok()) return ansi.status();
      std::fputs(ansi->c_str(), stdout);
    }
  }
  return written;
}

}  // namespace attnroll::cli
