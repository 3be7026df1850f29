// `attnroll compare`: every comparison metric of two saliency maps.
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/npy/npy.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

void PrintCompareUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] compare --a MAP.npy --b MAP.npy [options]\n\n"
      "Compares saliency maps a (baseline) and b (candidate) of the same shape: one map [n]\n"
      "(or [h, w] with --grid) or k maps [k, n] / [k, h, w], float32 or float16, >= 0.\n\n"
      "  --grid HxW          the maps' grid (SSIM, earth mover's distance, centre of mass)\n"
      "  --top-k K           top-k IoU with k = K (default: the top 10%% of entries)\n"
      "  --top-mass F        top-k IoU on the largest entries holding share F of each map\n"
      "  --region MASK.npy   a mask (non-zero = inside, one value per map entry): share of\n"
      "                      each map's mass inside it\n"
      "  --ssim-window N     odd SSIM window side (default 7)\n"
      "  --diff-out FILE.npy write the signed difference maps b - a\n"
      "  --json              print every metric as JSON on stdout\n");
}

std::string Maybe(const v1::MaybeValue& v) {
  return v.defined() ? absl::StrFormat("%.6g", v.value()) : "undefined (" + v.note() + ")";
}

std::string MaybeJson(const v1::MaybeValue& v) {
  if (v.defined()) return absl::StrFormat("%.17g", v.value());
  return v.note().empty() ? "null" : absl::StrCat("{\"undefined\": ", JsonString(v.note()), "}");
}

}  // namespace

void PrintComparisons(const google::protobuf::RepeatedPtrField<v1::Comparison>& comparisons,
                      const std::string& server_version, bool json) {
  if (json) {
    std::vector<std::string> items;
    for (const v1::Comparison& c : comparisons) {
      items.push_back(absl::StrFormat(
          "{\"spearman\": %s, \"kendall_tau_b\": %s, \"pearson\": %s, \"cosine\": %.17g, "
          "\"top_k_iou\": %.17g, \"top_k_used\": [%u, %u], \"l1\": %.17g, \"l2\": %.17g, "
          "\"js_divergence\": %.17g, \"ssim\": %s, \"emd\": %s, \"com_a\": [%.17g, %.17g], "
          "\"com_b\": [%.17g, %.17g], \"com_shift\": %s, \"region_share_a\": %s, "
          "\"region_share_b\": %s}",
          MaybeJson(c.spearman()), MaybeJson(c.kendall_tau_b()), MaybeJson(c.pearson()), c.cosine(),
          c.top_k_iou(), c.top_k_used_a(), c.top_k_used_b(), c.l1(), c.l2(), c.js_divergence(),
          MaybeJson(c.ssim()), MaybeJson(c.emd()), c.com_a().row(), c.com_a().col(), c.com_b().row(),
          c.com_b().col(), MaybeJson(c.com_shift()), MaybeJson(c.region_share_a()),
          MaybeJson(c.region_share_b())));
    }
    std::printf("{\"server_version\": %s, \"comparisons\": [%s]}\n",
                JsonString(server_version).c_str(), absl::StrJoin(items, ", ").c_str());
    return;
  }
  for (int k = 0; k < comparisons.size(); ++k) {
    const v1::Comparison& c = comparisons[k];
    if (comparisons.size() > 1) std::printf("map %d\n", k);
    std::printf("  spearman        %s\n  kendall tau-b   %s\n  pearson         %s\n",
                Maybe(c.spearman()).c_str(), Maybe(c.kendall_tau_b()).c_str(), Maybe(c.pearson()).c_str());
    std::printf("  cosine          %.6g\n  top-k IoU       %.6g (k = %u / %u)\n", c.cosine(),
                c.top_k_iou(), c.top_k_used_a(), c.top_k_used_b());
    std::printf("  L1, L2          %.6g, %.6g (sum-normalised)\n  JS divergence   %.6g nats\n",
                c.l1(), c.l2(), c.js_divergence());
    std::printf("  SSIM            %s\n  EMD             %s cells\n  COM shift       %s cells\n",
                Maybe(c.ssim()).c_str(), Maybe(c.emd()).c_str(), Maybe(c.com_shift()).c_str());
    if (c.region_share_a().defined()) {
      std::printf("  region share    %.6g -> %.6g\n", c.region_share_a().value(), c.region_share_b().value());
    }
  }
}

int RunCompare(const GlobalOptions& global, const std::vector<std::string>& args) {
  static const std::set<std::string> kValued = {"a", "b", "grid", "top-k", "top-mass", "region",
                                                "ssim-window", "diff-out"};
  std::map<std::string, std::string> opt;
  if (const std::string parsed = ParseOptions(args, kValued, {"json"}, &opt); parsed == "help") {
    PrintCompareUsage();
    return 0;
  } else if (!parsed.empty()) {
    return UsageError("compare", parsed);
  }
  if (!opt.count("a") || !opt.count("b")) return UsageError("compare", "--a and --b are required");

  v1::CompareRequest request;
  for (const char* side : {"a", "b"}) {
    absl::StatusOr<Array> map = ReadNpy(opt[side]);
    if (!map.ok()) return Fail(map.status());
    ToTensor(*map, std::string(side) == "a" ? request.mutable_a() : request.mutable_b());
  }
  v1::CompareOptions* o = request.mutable_options();
  if (opt.count("grid")) {
    uint32_t h, w;
    if (!ParseGrid(opt["grid"], &h, &w)) return UsageError("compare", "--grid: expected HxW");
    o->set_grid_height(h);
    o->set_grid_width(w);
  }
  uint32_t u;
  double d;
  if (opt.count("top-k")) {
    if (!absl::SimpleAtoi(opt["top-k"], &u)) return UsageError("compare", "--top-k: expected a count");
    o->set_top_k(u);
  }
  if (opt.count("top-mass")) {
    if (!absl::SimpleAtod(opt["top-mass"], &d)) return UsageError("compare", "--top-mass: expected a number");
    o->set_top_mass(d);
  }
  if (opt.count("ssim-window")) {
    if (!absl::SimpleAtoi(opt["ssim-window"], &u)) return UsageError("compare", "--ssim-window: expected a count");
    o->set_ssim_window(u);
  }
  if (opt.count("region")) {
    absl::StatusOr<Array> mask = ReadNpy(opt["region"]);
    if (!mask.ok()) return Fail(mask.status());
    ToTensor(*mask, o->mutable_region());
  }

  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  absl::StatusOr<v1::CompareResponse> response =
      client->Compare(request, absl::Seconds(global.timeout_seconds));
  if (!response.ok()) return Fail(response.status());

  if (opt.count("diff-out")) {
    Array diff;
    diff.shape.assign(request.a().shape().begin(), request.a().shape().end());
    for (const v1::Comparison& c : response->comparisons()) {
      const float* p = reinterpret_cast<const float*>(c.difference().data().data());
      diff.values.insert(diff.values.end(), p, p + c.difference().data().size() / sizeof(float));
    }
    if (absl::Status st = WriteNpy(opt["diff-out"], diff); !st.ok()) return Fail(st);
  }
  PrintComparisons(response->comparisons(), response->server_version(), opt.count("json") > 0);
  return 0;
}

}  // namespace attnroll::cli
