#include "client/cli/commands.h"

#include <algorithm>
#include <cstdio>
#include <future>
#include <unistd.h>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/attention_input.h"
#include "client/cli/cli_common.h"
#include "client/cli/pictures.h"
#include "client/npy/npy.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

int Usage(const std::string& message) { return UsageError("explain", message); }

bool ParseUintList(const std::string& s, std::vector<uint32_t>* out) {
  for (absl::string_view part : absl::StrSplit(s, ',')) {
    uint32_t v;
    if (!absl::SimpleAtoi(part, &v)) return false;
    out->push_back(v);
  }
  return !out->empty();
}

// Options that take a value, and flags that do not.
const std::set<std::string> kValued = {
    "attention", "method", "fusion", "head-weights", "residual", "layers", "rows", "prefix",
    "grid", "scale", "wire", "out", "valid-lengths", "max-message-bytes", "request-id",
    "row-sum-tolerance", "rule", "gradient", "discard-ratio", "threshold", "mass", "top-k",
    "sink", "residual-weights", "value-norms", "head-aggregate", "aggregate-out", "encoder",
    "decoder", "cross", "composition", "encoder-gradient", "decoder-gradient", "cross-gradient",
    "encoder-out", "decoder-out", "prune-placement", "encoder-valid-lengths",
    "decoder-valid-lengths", "encoder-residual-weights", "decoder-residual-weights", "layout",
    "encoder-value-norms", "decoder-value-norms", "cross-value-norms", "client-fusion",
    "monitor-model", "monitor-group", "monitor-sample", "png", "image", "colormap", "alpha", "tokens",
    "html", "ansi"};
const std::set<std::string> kFlags = {"no-renorm", "per-layer", "json", "causal", "grad-normalize",
                                      "raw", "renorm-before-residual", "fail-on-degenerate",
                                      "monitor-only"};

// --prune-placement: "before" or "after" for every step, or STEP=PLACE,...
// with STEP in discard, threshold, mass, top-k.
std::string ParsePrunePlacement(const std::string& value, v1::Pruning* p) {
  using Setter = void (v1::Pruning::*)(v1::PruningPlacement);
  const std::map<std::string, Setter> steps = {
      {"discard", &v1::Pruning::set_discard_ratio_placement},
      {"threshold", &v1::Pruning::set_threshold_placement},
      {"mass", &v1::Pruning::set_mass_placement},
      {"top-k", &v1::Pruning::set_top_k_placement}};
  auto place = [](absl::string_view s, v1::PruningPlacement* out) {
    if (s == "before") *out = v1::PRUNING_PLACEMENT_BEFORE_RESIDUAL;
    else if (s == "after") *out = v1::PRUNING_PLACEMENT_AFTER_RESIDUAL;
    else return false;
    return true;
  };
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    std::vector<std::string> kv = absl::StrSplit(part, '=');
    v1::PruningPlacement where;
    if (kv.size() == 1 && place(kv[0], &where)) {
      for (const auto& [name, set] : steps) (p->*set)(where);
    } else if (kv.size() == 2 && steps.count(kv[0]) && place(kv[1], &where)) {
      (p->*steps.at(kv[0]))(where);
    } else {
      return "--prune-placement: expected before|after or STEP=before|after,... (STEP: discard, "
             "threshold, mass, top-k), got '" + std::string(part) + "'";
    }
  }
  return "";
}

}  // namespace

void PrintExplainUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] explain --attention FILE.npy --out FILE.npy [options]\n\n"
      "Input (post-softmax attention, rows = queries; float32, float16 or float64): a .npy of\n"
      "shape [L, H, n, n]; a 5-D .npy with --layout blhnn ([B, L, H, n, n]) or lbhnn ([L, B, H,\n"
      "n, n], torch.stack of per-layer tensors); or a .npz (np.savez(f, *layers)) or a directory of\n"
      "per-layer .npy files, each [H, n, n] or [B, H, n, n]. --gradient, --residual-weights and\n"
      "--value-norms take the same form. Output: float32 .npy, [k, n-P] for k rows ([k, h, w]\n"
      "with --grid), [L, k, ...] with --per-layer, with a leading B for batched input.\n\n"
      "  --layout blhnn|lbhnn         the axis order of a 5-D array (never guessed)\n"
      "  --method rollout|grad-rollout|flow  analysis (default rollout); flow: exact attention\n"
      "                               flow (Abnar & Zuidema) on the same fused graph\n"
      "  --raw                        flow: raw flow values, not divided by their sum\n"
      "  --gradient FILE.npy          grad-rollout: d(logit)/d(attention), same shape as --attention\n"
      "  --rule chefer|vit_explain    grad-rollout rule (default chefer: R += mean_h(max(0, G*A)) R)\n"
      "  --grad-normalize             chefer: row-normalise I + Ab\n"
      "  --discard-ratio R            prune the lowest fraction R of each fused layer (vit-explain)\n"
      "  --threshold T                prune entries < T in each row\n"
      "  --mass P                     keep the largest entries holding share P of each row\n"
      "  --top-k K                    keep the K largest entries of each row\n"
      "                               Each step in its published place: discard, threshold and\n"
      "                               mass prune the fused F before the residual, At =\n"
      "                               rownorm((1-a) prune(F) + a I) (vit-explain); top-k prunes\n"
      "                               At after it, then rows are renormalised (top-k rollout)\n"
      "  --prune-placement P          before|after for every step, or STEP=before|after,...\n"
      "                               (STEP: discard, threshold, mass, top-k)\n"
      "  --renorm-before-residual     renormalise pruned rows before the residual is added\n"
      "                               (attnroll 0.1's placement)\n"
      "  --residual-weights FILE.npy  residual weight per layer [L] or per query token [L, n]\n"
      "                               (leading B for batched input), replacing --residual\n"
      "  --value-norms FILE.npy       value-vector norms [L, H, n] (leading B): columns of each\n"
      "                               head scaled by them, rows renormalised (Kobayashi 2020)\n"
      "  --causal                     decoder-only model: rows must be lower-triangular\n"
      "  --sink K                     drop the first K key columns from the maps, renormalise\n"
      "  --fusion mean|max|min|weighted|none  head fusion (default mean); none: head-specific\n"
      "                               rollout, one chain per head, output [H, k, ...]\n"
      "  --head-aggregate mean|max|min|weighted  fusion none: aggregate of the head maps\n"
      "  --aggregate-out FILE.npy     fusion none: write that aggregate ([k, ...]) here\n"
      "  --head-weights w1,w2,...     one weight per head, for --fusion weighted\n"
      "  --residual A                 residual weight a: (1-a) A + a I (default 0.5; 0 = none)\n"
      "  --no-renorm                  do not renormalise rows after the residual\n"
      "  --layers FIRST:LAST          0-based inclusive layer range (default all)\n"
      "  --per-layer                  return the read-out of every R_l in the range\n"
      "  --rows I,J,...|mean|last|all rows to read out (default 0), the mean of all rows, the\n"
      "                               last valid token of each sequence, or (flow) every token\n"
      "  --prefix P                   prefix tokens (CLS, registers) dropped from the maps\n"
      "  --grid HxW                   reshape the n-P tokens to an H x W grid\n"
      "  --scale none|max|minmax|sum  map scaling (default none)\n"
      "  --wire fp32|fp16|bf16        dtype on the wire (default fp32)\n"
      "  --client-fusion auto|off|on  fuse heads here and send one per layer (H times fewer\n"
      "                               bytes) when the analysis allows it: mean or weighted\n"
      "                               fusion, no gradient, no value norms (default auto; off\n"
      "                               sends every head, for per-head validation)\n"
      "  --valid-lengths N1,N2,...    valid length of each sequence (padding is cropped)\n"
      "  --row-sum-tolerance T        allowed |row sum - 1| (default by wire dtype)\n"
      "  --max-message-bytes N        split layers by heads above this size (default 4 MiB)\n"
      "  --request-id ID              id echoed in the response\n"
      "  --fail-on-degenerate         fail (exit 1) instead of warning when a layer's gradient or\n"
      "                               gradient-weighted attention is zero everywhere, or a map\n"
      "                               has no mass\n"
      "  --json                       print a machine-readable summary on stdout\n"
      "  --monitor-model M            tag the pass as traffic of model M (live monitoring; M in\n"
      "                               the server's --monitor-models)\n"
      "  --monitor-group G            ... and of group G\n"
      "  --monitor-sample K           the server folds 1 in K passes of the model (default 1)\n"
      "  --monitor-only               monitoring only: no maps come back (--out not needed), and\n"
      "                               an unsampled pass is validated, not explained\n\n"
      "Pictures (of one map: one row, one sequence):\n"
      "  --png OUT.png                the map on its --grid as a heatmap with a colour bar\n"
      "                               (bottom: the map's minimum, top: its maximum)\n"
      "  --image IN.png|IN.jpg        upsample the map (bilinear) to this image and blend it over\n"
      "                               (default: 16 pixels a cell, no image)\n"
      "  --alpha A                    the heatmap's weight over the image, in [0, 1] (default 0.5)\n"
      "  --colormap NAME              viridis (default), magma, inferno, plasma, gray or coolwarm\n"
      "  --tokens TOKENS.txt          text: one token per line (n-P lines, or n with the prefix\n"
      "                               first), coloured by their saliency\n"
      "  --html OUT.html              write the coloured tokens as an HTML page\n"
      "  --ansi auto|always|never     print them in 24-bit colour on stdout (auto: on a terminal)\n\n"
      "Encoder-decoder (or CLIP-style two-encoder) models, instead of --attention:\n"
      "  --encoder E.npy --decoder D.npy --cross X.npy   [Le, H, ne, ne], [Ld, H, nd, nd],\n"
      "                               [Ld, H, nd, ne] (leading B for batches)\n"
      "  --composition rules|rollout  rules (default; Chefer ICCV 2021, needs the gradients\n"
      "                               --encoder-gradient/--decoder-gradient/--cross-gradient)\n"
      "                               or rollout: R_de = R_dd^T (Abar_cross_last R_ee)\n"
      "  --encoder-out F.npy --decoder-out F.npy  also write R_ee and R_dd\n"
      "  --encoder-valid-lengths N1,... --decoder-valid-lengths N1,...  each side's valid length\n"
      "                               per sequence (padding is cropped)\n"
      "  --encoder-residual-weights F.npy --decoder-residual-weights F.npy  rollout composition:\n"
      "                               [L] or [L, n] per stack (leading B for batches)\n"
      "  --encoder-value-norms F.npy --decoder-value-norms F.npy --cross-value-norms F.npy\n"
      "                               [L, H, keys] per stack (leading B for batches)\n"
      "  Output: rows of R_de (decoder x encoder tokens; --rows picks decoder tokens, default all).\n");
}

const std::set<std::string>& ExplainInputOptions() {
  static const std::set<std::string> kInputs = {
      "attention", "out", "gradient", "aggregate-out", "residual-weights", "value-norms", "encoder",
      "decoder", "cross", "encoder-gradient", "decoder-gradient", "cross-gradient", "encoder-out",
      "decoder-out", "encoder-valid-lengths", "decoder-valid-lengths", "encoder-residual-weights",
      "decoder-residual-weights", "encoder-value-norms", "decoder-value-norms", "cross-value-norms",
      "composition", "monitor-model", "monitor-group", "monitor-sample", "monitor-only", "png", "image",
      "colormap", "alpha", "tokens", "html", "ansi"};
  return kInputs;
}

bool IsExplainOption(const std::string& name, bool* takes_value) {
  *takes_value = kValued.count(name) > 0;
  return *takes_value || kFlags.count(name) > 0;
}

std::string SplitExplainArgs(const std::vector<std::string>& args,
                             const std::set<std::string>& own_valued,
                             const std::set<std::string>& own_flags,
                             const std::set<std::string>& not_here,
                             std::map<std::string, std::string>* own,
                             std::map<std::string, std::string>* explain) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") return "help";
    const std::string name = args[i].rfind("--", 0) == 0 ? args[i].substr(2) : "";
    if (own_flags.count(name)) {
      (*own)[name] = "1";
      continue;
    }
    bool takes_value = true;
    const bool ours = own_valued.count(name) > 0;
    if (!ours && (not_here.count(name) || !IsExplainOption(name, &takes_value))) {
      return "unknown option '" + args[i] + "'";
    }
    if (!takes_value) {
      (*explain)[name] = "1";
      continue;
    }
    if (i + 1 >= args.size()) return args[i] + " needs a value";
    (ours ? *own : *explain)[name] = args[++i];
  }
  return "";
}

std::string BuildExplainRequest(std::map<std::string, std::string>& opt, v1::PassHeader* header_out,
                                client::ExplainOptions* options_out) {
  const std::string method = opt.count("method") ? opt["method"] : "rollout";
  if (method != "rollout" && method != "grad-rollout" && method != "flow") {
    return std::string("--method: expected rollout, grad-rollout or flow, got '" + method + "'");
  }
  const bool flow = method == "flow";
  if (flow) {
    for (const char* name : {"per-layer", "discard-ratio", "threshold", "mass", "top-k",
                             "prune-placement", "renorm-before-residual", "fail-on-degenerate"}) {
      if (opt.count(name)) return std::string(std::string("--") + name + " is not used with --method flow");
    }
  } else if (opt.count("raw")) {
    return std::string("--raw is only used with --method flow");
  }
  if (opt.count("monitor-model")) {
    v1::MonitorTag* tag = header_out->mutable_monitor();
    tag->set_model(opt["monitor-model"]);
    if (opt.count("monitor-group")) tag->set_group(opt["monitor-group"]);
    if (opt.count("monitor-sample")) {
      uint32_t k;
      if (!absl::SimpleAtoi(opt["monitor-sample"], &k)) return std::string("--monitor-sample: expected a count K (1 in K passes)");
      tag->set_sample_one_in(k);
    }
    tag->set_monitor_only(opt.count("monitor-only") > 0);
  } else if (opt.count("monitor-group") || opt.count("monitor-sample") || opt.count("monitor-only")) {
    return std::string("--monitor-group, --monitor-sample and --monitor-only need --monitor-model");
  }
  const bool grad = method == "grad-rollout";
  if (grad != (opt.count("gradient") > 0)) {
    return std::string(grad ? "--method grad-rollout needs --gradient FILE.npy"
                      : "--gradient is only used with --method grad-rollout");
  }
  if (!grad && (opt.count("rule") || opt.count("grad-normalize"))) {
    return std::string("--rule and --grad-normalize are only used with --method grad-rollout");
  }

  v1::PassHeader& header = *header_out;
  header.set_request_id(opt.count("request-id") ? opt["request-id"] : "cli");
  v1::Layout* layout = header.mutable_layout();
  v1::RolloutOptions* ro = header.add_analyses()->mutable_rollout();

  v1::HeadFusion fusion = v1::HEAD_FUSION_MEAN;
  if (opt.count("fusion")) {
    if (!ParseFusion(opt["fusion"], /*allow_none=*/true, &fusion)) {
      return std::string("--fusion: expected mean|max|min|weighted|none");
    }
    ro->set_fusion(fusion);
  }
  const bool head_specific = ro->fusion() == v1::HEAD_FUSION_NONE;
  if (!head_specific && (opt.count("head-aggregate") || opt.count("aggregate-out"))) {
    return std::string("--head-aggregate and --aggregate-out are only used with --fusion none");
  }
  if (opt.count("head-aggregate")) {
    v1::HeadFusion aggregate;
    if (!ParseFusion(opt["head-aggregate"], /*allow_none=*/false, &aggregate)) {
      return std::string("--head-aggregate: expected mean|max|min|weighted");
    }
    ro->set_head_aggregate(aggregate);
  }
  if (opt.count("head-weights")) {
    for (absl::string_view part : absl::StrSplit(opt["head-weights"], ',')) {
      float w;
      if (!absl::SimpleAtof(part, &w)) return std::string("--head-weights: bad number '" + std::string(part) + "'");
      ro->add_head_weights(w);
    }
  }
  if (opt.count("residual")) {
    float a;
    if (!absl::SimpleAtof(opt["residual"], &a)) return std::string("--residual: expected a number");
    ro->set_residual(a);
  }
  ro->set_no_renormalize(opt.count("no-renorm") > 0);
  if (opt.count("layers")) {
    std::vector<std::string> parts = absl::StrSplit(opt["layers"], ':');
    uint32_t first, last;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &first) || !absl::SimpleAtoi(parts[1], &last)) {
      return std::string("--layers: expected FIRST:LAST");
    }
    ro->mutable_layers()->set_first(first);
    ro->mutable_layers()->set_last(last);
  }
  ro->set_per_layer(opt.count("per-layer") > 0);
  if (grad) {
    v1::GradientWeighting* gw = ro->mutable_gradient();
    const std::string rule = opt.count("rule") ? opt["rule"] : "chefer";
    if (rule == "chefer") {
      gw->set_rule(v1::GRADIENT_RULE_CHEFER);
    } else if (rule == "vit_explain") {
      gw->set_rule(v1::GRADIENT_RULE_VIT_EXPLAIN);
    } else {
      return std::string("--rule: expected chefer or vit_explain");
    }
    gw->set_row_normalize(opt.count("grad-normalize") > 0);
  }
  for (const char* name : {"discard-ratio", "threshold", "mass"}) {
    if (!opt.count(name)) continue;
    double v;
    if (!absl::SimpleAtod(opt[name], &v)) return std::string(std::string("--") + name + ": expected a number");
    v1::Pruning* p = ro->mutable_pruning();
    if (std::string(name) == "discard-ratio") p->set_discard_ratio(v);
    if (std::string(name) == "threshold") p->set_threshold(static_cast<float>(v));
    if (std::string(name) == "mass") p->set_mass(static_cast<float>(v));
  }
  if (opt.count("top-k")) {
    uint32_t k;
    if (!absl::SimpleAtoi(opt["top-k"], &k)) return std::string("--top-k: expected a count");
    ro->mutable_pruning()->set_top_k(k);
  }
  if (opt.count("prune-placement")) {
    if (std::string bad = ParsePrunePlacement(opt["prune-placement"], ro->mutable_pruning()); !bad.empty()) {
      return bad;
    }
  }
  if (opt.count("renorm-before-residual")) ro->mutable_pruning()->set_renormalize_before_residual(true);
  if (opt.count("fail-on-degenerate")) ro->set_fail_on_degenerate(true);
  if (opt.count("sink")) {
    uint32_t k;
    if (!absl::SimpleAtoi(opt["sink"], &k)) return std::string("--sink: expected a count");
    ro->mutable_readout()->set_sink_tokens(k);
  }
  layout->set_causal(opt.count("causal") > 0);
  if (opt.count("rows")) {
    if (opt["rows"] == "mean") {
      ro->mutable_readout()->set_mean_of_rows(true);
    } else if (opt["rows"] == "all") {
      if (!flow) return std::string("--rows all is only used with --method flow (use --rows mean or a list)");
    } else if (opt["rows"] == "last") {
      ro->mutable_readout()->set_last_row(true);
    } else {
      std::vector<uint32_t> rows;
      if (!ParseUintList(opt["rows"], &rows)) return std::string("--rows: expected I,J,... or mean");
      for (uint32_t r : rows) ro->mutable_readout()->add_rows(r);
    }
  }
  if (opt.count("valid-lengths")) {
    std::vector<uint32_t> lengths;
    if (!ParseUintList(opt["valid-lengths"], &lengths)) return std::string("--valid-lengths: expected N1,N2,...");
    for (uint32_t v : lengths) layout->add_valid_lengths(v);
  }
  if (opt.count("row-sum-tolerance")) {
    float t;
    if (!absl::SimpleAtof(opt["row-sum-tolerance"], &t)) return std::string("--row-sum-tolerance: expected a number");
    header.set_row_sum_tolerance(t);
  }
  client::ExplainOptions& options = *options_out;
  if (std::string bad = ApplySharedExplainOptions(opt, ro->mutable_readout(), layout, &options.wire);
      !bad.empty()) {
    return std::string(bad);
  }
  if (std::string bad = ParseClientFusion(opt, &options.client_fusion); !bad.empty()) return bad;
  if (flow) {
    // Flow runs on the graph rollout builds: move the shared options over
    // (`ro` is gone once the analysis becomes a flow).
    const v1::RolloutOptions graph = *ro;
    v1::FlowOptions* f = header.mutable_analyses(0)->mutable_flow();
    f->set_fusion(graph.fusion());
    *f->mutable_head_weights() = graph.head_weights();
    if (graph.has_residual()) f->set_residual(graph.residual());
    f->set_no_renormalize(graph.no_renormalize());
    if (graph.has_layers()) *f->mutable_layers() = graph.layers();
    *f->mutable_readout() = graph.readout();
    f->set_all_rows(opt.count("rows") > 0 && opt["rows"] == "all");
    f->set_raw(opt.count("raw") > 0);
  }
  if (opt.count("max-message-bytes") &&
      (!absl::SimpleAtoi(opt["max-message-bytes"], &options.max_message_bytes) ||
       options.max_message_bytes <= 0)) {
    return std::string("--max-message-bytes: expected a positive count");
  }

  return "";
}

int RunExplain(const GlobalOptions& global, const std::vector<std::string>& args) {
  std::map<std::string, std::string> opt;
  if (const std::string parsed = ParseOptions(args, kValued, kFlags, &opt); parsed == "help") {
    PrintExplainUsage();
    return 0;
  } else if (!parsed.empty()) {
    return Usage(parsed);
  }
  if (opt.count("encoder") || opt.count("decoder") || opt.count("cross")) {
    for (const std::string& name : PictureOptionNames()) {
      if (opt.count(name)) return Usage("--" + name + " is not used with encoder-decoder stacks");
    }
    return RunEncoderDecoderExplain(global, opt);
  }
  if (!opt.count("attention")) return Usage("--attention FILE.npy is required");
  if (!opt.count("out") && !opt.count("monitor-only")) return Usage("--out FILE.npy is required");
  const bool json = opt.count("json") > 0;
  if (json && opt.count("ansi") && opt["ansi"] == "always") return Usage("--ansi always is not used with --json");
  PictureOptions pictures;
  if (std::string bad = ParsePictureOptions(opt, !json && isatty(fileno(stdout)), &pictures); !bad.empty()) {
    return Usage(bad);
  }
  if (opt.count("monitor-only") && (!pictures.png.empty() || !pictures.tokens.empty())) {
    return Usage("--png and --tokens are not used with --monitor-only (no maps come back)");
  }
  if (!pictures.png.empty() && !opt.count("grid")) return Usage("--png needs the map on a grid: add --grid HxW");
  if (absl::Status st = LoadPictureImage(&pictures); !st.ok()) return Fail(st);
  v1::PassHeader header;
  client::ExplainOptions options;
  options.timeout = absl::Seconds(global.timeout_seconds);
  if (std::string bad = BuildExplainRequest(opt, &header, &options); !bad.empty()) return Usage(bad);
  // Nothing else runs in the CLI while it fuses: up to 4 of its CPUs share
  // the layers (bandwidth-bound beyond that).
  options.fusion_threads = std::min(4, UsableCpus());
  const bool grad = header.analyses(0).has_rollout() && header.analyses(0).rollout().has_gradient();
  const bool flow = header.analyses(0).has_flow();
  const std::string method = flow ? "flow" : grad ? "grad-rollout" : "rollout";
  InputLayout input_layout = InputLayout::kUnset;
  if (opt.count("layout") && !ParseInputLayout(opt["layout"], &input_layout)) {
    return Usage("--layout: expected blhnn ([B, L, H, n, n]) or lbhnn ([L, B, H, n, n])");
  }
  // The channel is made (gRPC's start-up) and starts connecting on another
  // thread while this one maps the input; the handshake then overlaps reading
  // and fusing it. An unreadable input is still reported before the server.
  std::future<absl::StatusOr<std::unique_ptr<client::Client>>> connecting =
      std::async(std::launch::async, [&global] { return ConnectClient(global); });
  absl::StatusOr<AttentionInput> input = ReadAttentionInput(opt["attention"], input_layout, "--attention");
  if (!input.ok()) return Fail(input.status());
  absl::StatusOr<std::unique_ptr<client::Client>> connected = connecting.get();
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  const bool batched = input->batched;
  absl::StatusOr<Array> gradient;
  if (grad) {
    gradient = ReadGradientInput(opt["gradient"], input_layout, "--gradient", *input);
    if (!gradient.ok()) return Fail(gradient.status());
  }
  client::AttentionView view;
  view.data = input->values();
  if (grad) view.gradient = gradient->values.data();
  view.batch = input->batch;
  view.layers = input->layers;
  view.heads = input->heads;
  view.tokens = input->cols;
  absl::StatusOr<Array> residual_weights, value_norms;
  if (opt.count("residual-weights")) {
    int per_token = 0;
    residual_weights = ReadSideInput(opt["residual-weights"], input_layout, "--residual-weights", *input,
                                     {{}, {view.tokens}}, &per_token);
    if (!residual_weights.ok()) return Fail(residual_weights.status());
    view.residual_weights = residual_weights->values.data();
    view.residual_per_token = per_token == 1;
  }
  if (opt.count("value-norms")) {
    value_norms = ReadSideInput(opt["value-norms"], input_layout, "--value-norms", *input,
                                {{view.heads, view.tokens}});
    if (!value_norms.ok()) return Fail(value_norms.status());
    view.value_norms = value_norms->values.data();
  }

  client::CallStats stats;
  absl::StatusOr<v1::ExplainResponse> response;
  if (flow) {
    // Flow can take a while: use the stream that reports progress, and draw
    // a bar when stderr is a terminal.
    const bool tty = isatty(fileno(stderr));
    const absl::Time t0 = absl::Now();
    response = client->ExplainWithProgress(
        header, view, options,
        [&](const v1::Progress& p) {
          if (!tty || p.total() == 0) return;
          const double frac = static_cast<double>(p.done()) / static_cast<double>(p.total());
          const double elapsed = absl::ToDoubleSeconds(absl::Now() - t0);
          const int width = 30, filled = static_cast<int>(frac * width);
          std::fprintf(stderr, "\rflow [%s%s] %5.1f%%  %llu/%llu max flows  ETA %.0fs ",
                       std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                       100 * frac, static_cast<unsigned long long>(p.done()),
                       static_cast<unsigned long long>(p.total()),
                       frac > 0 ? elapsed * (1 - frac) / frac : 0.0);
          if (p.done() == p.total()) std::fprintf(stderr, "\n");
        },
        &stats);
  } else {
    response = client->Explain(header, view, options, &stats);
  }
  if (!response.ok()) return Fail(response.status());
  if (header.monitor().monitor_only() && response->results_size() == 0) {
    // Monitor-only: the server folded (or skipped) the pass and returns no maps.
    if (opt.count("json")) {
      std::printf("{\"monitor_only\": true, \"request_id\": %s, \"server_version\": %s}\n",
                  JsonString(response->request_id()).c_str(), JsonString(response->server_version()).c_str());
    } else {
      std::printf("monitor-only pass sent (model %s): no maps returned\n", header.monitor().model().c_str());
    }
    return 0;
  }
  if (response->results_size() != 1) return Fail(absl::InternalError("expected one result"));
  absl::StatusOr<Array> out = AssembleMaps(response->results(0).maps(), batched);
  if (!out.ok()) return Fail(out.status());
  if (absl::Status st = WriteNpy(opt["out"], *out); !st.ok()) return Fail(st);
  if (opt.count("aggregate-out")) {
    absl::StatusOr<Array> agg = AssembleMaps(response->results(0).aggregate_maps(), batched);
    if (!agg.ok()) return Fail(agg.status());
    if (absl::Status st = WriteNpy(opt["aggregate-out"], *agg); !st.ok()) return Fail(st);
  }
  for (const std::string& w : response->results(0).warnings()) {
    std::fprintf(stderr, "attnroll: warning: %s\n", w.c_str());
  }
  absl::StatusOr<std::vector<Written>> pictures_written = WriteExplainPictures(
      *out, header.layout().grid().height(), header.layout().grid().width(),
      header.layout().prefix_tokens(), pictures);
  if (!pictures_written.ok()) return Fail(pictures_written.status());

  if (opt.count("json")) {
    const v1::AnalysisResult& r = response->results(0);
    std::printf(
        "{\"out\": %s, \"shape\": [%s], \"dtype\": \"float32\", \"method\": %s, \"input\": %s, "
        "\"path\": %s, \"rows\": [%s], \"request_id\": %s, \"server_version\": %s, "
        "\"wire\": \"%s\", \"heads_fused_on_client\": %s, \"bytes_sent\": %lld, \"messages_sent\": %d, "
        "\"sends\": %d, \"peer\": %s, \"warnings\": [%s], \"pictures\": [%s], "
        "\"timing\": {\"client_seconds\": %.6f, \"server_total_seconds\": %.6f, "
        "\"server_compute_seconds\": %.6f}}\n",
        JsonString(opt["out"]).c_str(), absl::StrJoin(out->shape, ", ").c_str(),
        JsonString(method).c_str(), JsonString(input->summary).c_str(), JsonString(r.path()).c_str(), absl::StrJoin(r.rows(), ", ").c_str(),
        JsonString(response->request_id()).c_str(), JsonString(response->server_version()).c_str(),
        opt.count("wire") ? opt["wire"].c_str() : "fp32",
        stats.heads_fused_on_client ? "true" : "false", static_cast<long long>(stats.bytes_sent), stats.messages_sent,
        stats.sends, JsonString(stats.peer).c_str(),
        absl::StrJoin(r.warnings(), ", ",
                      [](std::string* o, const std::string& w) { o->append(JsonString(w)); })
            .c_str(),
        absl::StrJoin(*pictures_written, ", ",
                      [](std::string* o, const Written& w) { o->append(JsonString(w.path)); })
            .c_str(),
        stats.seconds,
        response->timing().total_seconds(), response->timing().compute_seconds());
  } else {
    std::printf("read %s: %s\n", opt["attention"].c_str(), input->summary.c_str());
    std::printf("wrote %s: shape [%s], %s path, %.1f ms (server compute %.1f ms)\n",
                opt["out"].c_str(), absl::StrJoin(out->shape, ", ").c_str(),
                response->results(0).path().c_str(), stats.seconds * 1e3,
                response->timing().compute_seconds() * 1e3);
    for (const Written& w : *pictures_written) std::printf("wrote %s: %s\n", w.path.c_str(), w.summary.c_str());
  }
  return ExitWithoutTeardown(0);
}

int RunInfo(const GlobalOptions& global, const std::vector<std::string>& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::printf("Usage: attnroll [--server HOST:PORT] info\n  Prints the server's version, limits and analyses.\n");
      return 0;
    }
    return Usage("info takes no arguments, got '" + a + "'");
  }
  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  absl::StatusOr<v1::ServerInfo> info = client->GetServerInfo(absl::Seconds(global.timeout_seconds));
  if (!info.ok()) return Fail(info.status());
  const v1::Limits& l = info->limits();
  std::printf("server:   %s\nversion:  %s\nanalyses: %s\n", global.server.c_str(),
              info->version().c_str(), absl::StrJoin(info->analyses(), ", ").c_str());
  std::printf(
      "limits:   layers %u, heads %u, tokens %u, batch %u, message %llu B, pass %llu B, "
      "memory %llu B, passes/stream %u\nworkers:  %u (queue %u)\n",
      l.max_layers(), l.max_heads(), l.max_tokens(), l.max_batch(),
      static_cast<unsigned long long>(l.max_message_bytes()),
      static_cast<unsigned long long>(l.max_pass_bytes()),
      static_cast<unsigned long long>(l.max_memory_bytes()), l.max_passes_per_stream(), l.workers(),
      l.queue_size());
  return 0;
}

}  // namespace attnroll::cli
