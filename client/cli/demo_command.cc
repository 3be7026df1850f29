// `attnroll demo`: a first run with nothing to prepare. Makes a synthetic
// ViT-B/16-like pass (12 layers, 12 heads, CLS + 14 x 14 patches) in which
// every query attends more to a planted block of patches, and a synthetic
// input picture with an object on that block; asks the server for the CLS
// row's rollout and writes the map and the map over the picture.
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/cli/pictures.h"
#include "client/cpp/attnroll_client.h"
#include "client/render/image.h"

namespace attnroll::cli {
namespace {

constexpr int kLayers = 12, kHeads = 12, kGrid = 14, kTokens = 1 + kGrid * kGrid;

int Usage(const std::string& message) { return UsageError("demo", message); }

void PrintDemoUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] demo [--out-dir DIR] [--region TOP,LEFT,HEIGHT,WIDTH]\n"
      "       [--seed S] [--size PIXELS] [--colormap NAME] [--alpha A] [--save-attention]\n\n"
      "A first run: makes a synthetic ViT-B/16-like pass (12 layers x 12 heads, CLS + 14 x 14\n"
      "patches; each row the softmax of N(0, 1) logits, +2 on the keys of the planted block and,\n"
      "in every third head, +2 on the query's own key) and a synthetic input picture with an\n"
      "object on the block, sends the pass to the server (rollout of the CLS row, mean fusion,\n"
      "residual 0.5) and writes into DIR (default attnroll-demo):\n"
      "  input.png     the synthetic input picture (PIXELS a side, default 224)\n"
      "  map.npy       the saliency map, float32 [1, 14, 14]\n"
      "  overlay.png   the map upsampled over input.png, with a colour bar\n"
      "  attention.npy with --save-attention: the pass, float32 [12, 12, 197, 197] (22 MB)\n\n"
      "  --region TOP,LEFT,HEIGHT,WIDTH  the planted block in patches (default 3,8,3,3)\n"
      "  --seed S                     the random logits' seed (default 1)\n");
}

struct Region {
  int top = 3, left = 8, height = 3, width = 3;
  bool Contains(int r, int c) const { return r >= top && r < top + height && c >= left && c < left + width; }
};

// [L, H, n, n] attention: row-wise softmax of the logits described above.
std::vector<float> SyntheticAttention(const Region& region, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<float> a(size_t(kLayers) * kHeads * kTokens * kTokens);
  std::vector<double> logits(kTokens);
  float* out = a.data();
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      for (int i = 0; i < kTokens; ++i, out += kTokens) {
        double top = -1e300;
        for (int j = 0; j < kTokens; ++j) {
          double z = normal(rng);
          if (j > 0 && region.Contains((j - 1) / kGrid, (j - 1) % kGrid)) z += 2.0;
          if (h % 3 == 0 && j == i) z += 2.0;
          logits[j] = z;
          top = std::max(top, z);
        }
        double sum = 0;
        for (int j = 0; j < kTokens; ++j) sum += logits[j] = std::exp(logits[j] - top);
        for (int j = 0; j < kTokens; ++j) out[j] = static_cast<float>(logits[j] / sum);
      }
    }
  }
  return a;
}

// Sky over grass, and an orange disc on the planted block.
render::Image SyntheticPicture(const Region& region, int size) {
  render::Image image(size, size);
  const double cell = static_cast<double>(size) / kGrid;
  const double cy = (region.top + region.height / 2.0) * cell, cx = (region.left + region.width / 2.0) * cell;
  const double radius = 0.5 * std::min(region.height, region.width) * cell;
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      uint8_t* px = image.At(x, y);
      const double dy = y + 0.5 - cy, dx = x + 0.5 - cx;
      const bool disc = dx * dx + dy * dy <= radius * radius;
      const uint8_t sky[3] = {176, 204, 232}, grass[3] = {112, 160, 96}, object[3] = {232, 140, 40};
      const uint8_t* c = disc ? object : (y < size * 0.6 ? sky : grass);
      px[0] = c[0];
      px[1] = c[1];
      px[2] = c[2];
    }
  }
  return image;
}

}  // namespace

int RunDemo(const GlobalOptions& global, const std::vector<std::string>& args) {
  std::map<std::string, std::string> opt;
  const std::string parsed =
      ParseOptions(args, {"out-dir", "region", "seed", "size", "colormap", "alpha"}, {"save-attention"}, &opt);
  if (parsed == "help") {
    PrintDemoUsage();
    return 0;
  }
  if (!parsed.empty()) return Usage(parsed);
  const std::string dir = opt.count("out-dir") ? opt["out-dir"] : "attnroll-demo";
  Region region;
  if (opt.count("region")) {
    std::vector<std::string> parts = absl::StrSplit(opt["region"], ',');
    int v[4];
    bool ok = parts.size() == 4;
    for (size_t i = 0; ok && i < 4; ++i) ok = absl::SimpleAtoi(parts[i], &v[i]);
    if (ok) region = {v[0], v[1], v[2], v[3]};
    if (!ok || region.top < 0 || region.left < 0 || region.height < 1 || region.width < 1 ||
        region.top + region.height > kGrid || region.left + region.width > kGrid) {
      return Usage("--region: expected TOP,LEFT,HEIGHT,WIDTH of a block inside the 14 x 14 grid, got '" +
                   opt["region"] + "'");
    }
  }
  uint32_t seed = 1;
  if (opt.count("seed") && !absl::SimpleAtoi(opt["seed"], &seed)) {
    return Usage("--seed: expected a non-negative integer, got '" + opt["seed"] + "'");
  }
  int size = 224;
  if (opt.count("size") && (!absl::SimpleAtoi(opt["size"], &size) || size < kGrid || size > 2048)) {
    return Usage("--size: expected an integer in [14, 2048], got '" + opt["size"] + "'");
  }
  PictureOptions pictures;
  {
    std::map<std::string, std::string> picture_opt = {{"png", dir + "/overlay.png"},
                                                      {"image", dir + "/input.png"}};
    for (const char* name : {"colormap", "alpha"}) {
      if (opt.count(name)) picture_opt[name] = opt[name];
    }
    if (std::string bad = ParsePictureOptions(picture_opt, false, &pictures); !bad.empty()) return Usage(bad);
  }
  if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) {
    return Fail(absl::PermissionDeniedError(absl::StrCat("--out-dir: ", dir, ": cannot create")));
  }

  const std::vector<float> attention = SyntheticAttention(region, seed);
  if (absl::Status st = render::WritePng(pictures.image, SyntheticPicture(region, size)); !st.ok()) {
    return Fail(st);
  }
  if (opt.count("save-attention")) {
    npy::Array a{{kLayers, kHeads, kTokens, kTokens}, attention};
    if (absl::Status st = WriteNpy(dir + "/attention.npy", a); !st.ok()) return Fail(st);
  }

  v1::PassHeader header;
  header.set_request_id("demo");
  header.mutable_layout()->set_prefix_tokens(1);
  header.mutable_layout()->mutable_grid()->set_height(kGrid);
  header.mutable_layout()->mutable_grid()->set_width(kGrid);
  header.add_analyses()->mutable_rollout();  // mean fusion, residual 0.5, row 0
  client::AttentionView view;
  view.data = attention.data();
  view.layers = kLayers;
  view.heads = kHeads;
  view.tokens = kTokens;
  client::ExplainOptions options;
  options.timeout = absl::Seconds(global.timeout_seconds);
  client::CallStats stats;
  auto client = client::Client::Connect(global.server);
  absl::StatusOr<v1::ExplainResponse> response = client->Explain(header, view, options, &stats);
  if (!response.ok()) return Fail(response.status());
  if (response->results_size() != 1) return Fail(absl::InternalError("expected one result"));
  absl::StatusOr<Array> map = AssembleMaps(response->results(0).maps(), /*batched=*/false);
  if (!map.ok()) return Fail(map.status());
  if (absl::Status st = WriteNpy(dir + "/map.npy", *map); !st.ok()) return Fail(st);
  absl::StatusOr<std::vector<Written>> written = WriteExplainPictures(*map, kGrid, kGrid, 1, pictures);
  if (!written.ok()) return Fail(written.status());

  size_t hottest = 0;
  for (size_t i = 1; i < map->values.size(); ++i) {
    if (map->values[i] > map->values[hottest]) hottest = i;
  }
  const int hr = static_cast<int>(hottest) / kGrid, hc = static_cast<int>(hottest) % kGrid;
  std::printf("attnroll demo: a synthetic ViT-B/16-like pass (12 layers, 12 heads, 197 tokens) sent to %s "
              "in %.1f ms\n", global.server.c_str(), stats.seconds * 1e3);
  std::printf("planted block: rows %d-%d, columns %d-%d of the 14 x 14 patch grid\n", region.top,
              region.top + region.height - 1, region.left, region.left + region.width - 1);
  std::printf("hottest cell:  row %d, column %d (%s the planted block)\n", hr, hc,
              region.Contains(hr, hc) ? "inside" : "outside");
  std::printf("wrote %s: the synthetic input picture\n", pictures.image.c_str());
  std::printf("wrote %s/map.npy: float32 [%s]\n", dir.c_str(), absl::StrJoin(map->shape, ", ").c_str());
  for (const Written& w : *written) std::printf("wrote %s: %s\n", w.path.c_str(), w.summary.c_str());
  if (opt.count("save-attention")) std::printf("wrote %s/attention.npy: float32 [12, 12, 197, 197]\n", dir.c_str());
  return 0;
}

}  // namespace attnroll::cli
