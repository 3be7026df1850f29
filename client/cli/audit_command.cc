// `attnroll audit`: audits a dataset of (baseline, candidate) pairs. Files
// with the same name in the two directories are one item; each holds either
// attention ([L, H, n, n], explained here with rollout) or a precomputed map.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <memory>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/cli/pictures.h"
#include "client/npy/npy.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

int Usage(const std::string& message) { return UsageError("audit", message); }

void PrintAuditUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] audit --baseline DIR --candidate DIR --report OUT.json\n"
      "       [explain options: --method rollout|flow, --fusion, --residual, --layers, --rows I,\n"
      "        --prefix P, --grid HxW, --scale, --wire, pruning, --causal, --sink, ...]\n"
      "       [--region MASK.npy] [--groups FILE.csv] [--iou-top-k K] [--max-emd X]\n"
      "       [--min-spearman X] [--max-js X] [--max-l1 X] [--max-com-shift X] [--max-region-drop X]\n"
      "       [--shard I/N] [--state OUT.pb]\n"
      "       [--pictures DIR [--image IN.png|IN.jpg] [--alpha A] [--colormap NAME]]\n\n"
      "Files with the same name in both directories form one item (its id is the file name).\n"
      "A file is either attention [L, H, n, n] (both passes streamed to the server, which explains\n"
      "them with the explain options: rollout of row 0 by default, P prefix tokens dropped) or a\n"
      "precomputed saliency map. --groups: CSV lines `id,group`.\n"
      "Thresholds flag an item as drifted. The report (JSON) has every metric's distribution,\n"
      "per-group aggregates, the worst items, the mean maps and the mean shift map.\n"
      "--shard I/N audits only the items k with k mod N = I (k: the item's index in natural\n"
      "file-name order), for N replicas each auditing one shard. --state writes the audit's\n"
      "mergeable state; `attnroll audit-merge --report OUT.json STATE.pb...` merges the N\n"
      "states into the report one audit of every item gives, bit for bit.\n"
      "--pictures DIR (maps on a --grid) renders the whole audit's mean maps as explain --png\n"
      "does: DIR/mean_baseline.png, DIR/mean_candidate.png (--colormap, default viridis) and\n"
      "DIR/mean_shift.png (candidate - baseline, coolwarm centred on zero: red gained, blue lost),\n"
      "each over --image when given.\n");
}

}  // namespace

int RunAudit(const GlobalOptions& global, const std::vector<std::string>& args) {
  // The audit's own options; explain's options (rollout/flow settings) too.
  static const std::set<std::string> kValued = {
      "baseline", "candidate", "report", "region", "groups", "iou-top-k", "max-emd",
      "min-spearman", "max-js", "max-l1", "max-com-shift", "max-region-drop", "shard", "state",
      "pictures", "image", "colormap", "alpha"};
  // Audit files are [L, H, n, n] attention or maps: no batch, no layout.
  static const std::set<std::string> kNotHere = [] {
    std::set<std::string> names = ExplainInputOptions();
    names.insert({"per-layer", "valid-lengths", "json", "layout"});
    return names;
  }();
  std::map<std::string, std::string> opt, explain;
  const std::string split = SplitExplainArgs(args, kValued, {}, kNotHere, &opt, &explain);
  if (split == "help") {
    PrintAuditUsage();
    return 0;
  }
  if (!split.empty()) return Usage(split);
  for (const char* need : {"baseline", "candidate", "report"}) {
    if (!opt.count(need)) return Usage(absl::StrCat("--", need, " is required"));
  }
  // The mean maps as pictures: parsed as explain's --png options.
  PictureOptions pictures;
  {
    std::map<std::string, std::string> picture_opt;
    for (const char* name : {"image", "colormap", "alpha"}) {
      if (opt.count(name)) picture_opt[name] = opt[name];
    }
    if (opt.count("pictures")) picture_opt["png"] = opt["pictures"];
    if (std::string bad = ParsePictureOptions(picture_opt, false, &pictures); !bad.empty()) {
      if (!opt.count("pictures")) return Usage("--image, --alpha and --colormap are only used with --pictures");
      return Usage(bad);
    }
    if (opt.count("pictures") && !explain.count("grid")) {
      return Usage("--pictures needs the maps on a grid: add --grid HxW");
    }
    if (absl::Status st = LoadPictureImage(&pictures); !st.ok()) return Fail(st);
  }
  // The items: file names in both directories, in natural order.
  absl::StatusOr<std::vector<std::string>> baseline_files = npy::ListNpyFiles(opt["baseline"]);
  if (!baseline_files.ok()) return Fail(baseline_files.status());
  absl::StatusOr<std::vector<std::string>> candidate_files = npy::ListNpyFiles(opt["candidate"]);
  if (!candidate_files.ok()) return Fail(candidate_files.status());
  const std::set<std::string> in_candidate(candidate_files->begin(), candidate_files->end());
  std::vector<std::string> names;
  for (const std::string& n : *baseline_files) {
    if (in_candidate.count(n)) names.push_back(n);
  }
  if (names.empty()) {
    return Fail(absl::NotFoundError(absl::StrCat("no .npy file is in both ", opt["baseline"],
                                                 " and ", opt["candidate"])));
  }
  const uint64_t dataset_items = names.size();
  uint32_t shard_index = 0, shard_count = 1;
  if (opt.count("shard")) {
    std::pair<std::string, std::string> parts = absl::StrSplit(opt["shard"], absl::MaxSplits('/', 1));
    if (!absl::SimpleAtoi(parts.first, &shard_index) || !absl::SimpleAtoi(parts.second, &shard_count) ||
        shard_count < 1 || shard_index >= shard_count) {
      return Usage(absl::StrCat("--shard: expected I/N with 0 <= I < N, got \"", opt["shard"], "\""));
    }
    std::vector<std::string> mine;
    for (size_t k = shard_index; k < names.size(); k += shard_count) mine.push_back(names[k]);
    names = std::move(mine);
    if (names.empty()) {
      return Fail(absl::NotFoundError(absl::StrCat("shard ", shard_index, "/", shard_count, " of ",
                                                   dataset_items, " items holds no item")));
    }
  }
  std::map<std::string, std::string> groups;
  if (opt.count("groups")) {
    std::ifstream in(opt["groups"]);
    if (!in) return Fail(absl::NotFoundError(opt["groups"] + ": cannot open"));
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> parts = absl::StrSplit(line, ',');
      if (parts.size() >= 2) {
        groups[std::string(absl::StripAsciiWhitespace(parts[0]))] =
            std::string(absl::StripAsciiWhitespace(parts[1]));
      }
    }
  }

  // The analysis for attention files: explain's options (default: rollout, row 0).
  v1::PassHeader pass;
  client::ExplainOptions explain_options;
  if (std::string bad = BuildExplainRequest(explain, &pass, &explain_options); !bad.empty()) {
    return Usage(bad);
  }
  pass.set_request_id("audit");
  uint32_t u;
  v1::AuditHeader header;
  header.set_mergeable(opt.count("state") > 0);
  uint32_t grid_h = 0, grid_w = 0;
  if (pass.layout().has_grid()) {
    grid_h = pass.layout().grid().height();
    grid_w = pass.layout().grid().width();
    header.mutable_compare()->set_grid_height(grid_h);
    header.mutable_compare()->set_grid_width(grid_w);
  }
  if (opt.count("iou-top-k")) {
    if (!absl::SimpleAtoi(opt["iou-top-k"], &u)) return Usage("--iou-top-k: expected a count");
    header.mutable_compare()->set_top_k(u);
  }
  if (opt.count("region")) {
    absl::StatusOr<Array> mask = ReadNpy(opt["region"]);
    if (!mask.ok()) return Fail(mask.status());
    ToTensor(*mask, header.mutable_compare()->mutable_region());
  }
  v1::DriftThresholds* t = header.mutable_thresholds();
  const std::pair<const char*, void (v1::DriftThresholds::*)(double)> kThresholds[] = {
      {"max-emd", &v1::DriftThresholds::set_max_emd},
      {"min-spearman", &v1::DriftThresholds::set_min_spearman},
      {"max-js", &v1::DriftThresholds::set_max_js_divergence},
      {"max-l1", &v1::DriftThresholds::set_max_l1},
      {"max-com-shift", &v1::DriftThresholds::set_max_com_shift},
      {"max-region-drop", &v1::DriftThresholds::set_max_region_share_drop}};
  for (const auto& [name, setter] : kThresholds) {
    if (!opt.count(name)) continue;
    double v;
    if (!absl::SimpleAtod(opt[name], &v)) return Usage(absl::StrCat("--", name, ": expected a number"));
    (t->*setter)(v);
  }

  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  // The map length from the first baseline file: a map's size, or for
  // attention the read-out row without its prefix (the grid's cells).
  {
    absl::StatusOr<Array> first = ReadNpy(opt["baseline"] + "/" + names[0]);
    if (!first.ok()) return Fail(first.status());
    int64_t length = 1;
    if (first->shape.size() == 4 && first->shape[2] == first->shape[3]) {
      // k maps of (h * w or n - P) values, times H for head-specific rollout.
      const int64_t n = first->shape[3];
      const v1::Analysis& analysis = pass.analyses(0);
      const v1::ReadOut& ro = analysis.has_flow() ? analysis.flow().readout() : analysis.rollout().readout();
      const int64_t k = analysis.has_flow() && analysis.flow().all_rows() ? n
                        : std::max<int64_t>(1, ro.rows_size());
      const int64_t heads = analysis.has_rollout() && analysis.rollout().fusion() == v1::HEAD_FUSION_NONE
                                ? first->shape[1] : 1;
      length = heads * k * (grid_h > 0 ? int64_t{grid_h} * grid_w : n - pass.layout().prefix_tokens());
    } else {
      for (int64_t d : first->shape) length *= d;
    }
    header.set_map_length(static_cast<uint32_t>(std::max<int64_t>(length, 0)));
  }

  // Item results arrive on the stream's reader thread while this thread
  // sends: the counters are the reader's until Finish joins it.
  const bool tty = isatty(fileno(stderr));
  const absl::Time t0 = absl::Now();
  int64_t done = 0, drifted = 0, refused = 0;
  client::AuditOptions audit_options;
  audit_options.timeout = absl::Seconds(global.timeout_seconds);
  audit_options.on_item = [&](const v1::AuditItemResult& item) {
    ++done;
    if (item.has_error()) {
      ++refused;
      std::fprintf(stderr, "%sattnroll: item %s refused: %s: %s\n", tty ? "\n" : "", item.id().c_str(),
                   item.error().code_name().c_str(), item.error().message().c_str());
    }
    drifted += item.drift_flags_size() > 0;
    if (tty) {
      const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
      const double rate = secs > 0 ? done / secs : 0;
      std::fprintf(stderr, "\raudit %lld/%zu items  %.1f items/s  ETA %.0fs  drifted %lld ",
                   static_cast<long long>(done), names.size(), rate,
                   rate > 0 ? (names.size() - done) / rate : 0.0, static_cast<long long>(drifted));
    }
  };
  std::unique_ptr<client::AuditStream> stream = client->Audit(header, std::move(audit_options));
  // Sends one item: attention files as the item's two passes (explained by the
  // server with the same options), map files as a pair of maps. An error
  // other than FAILED_PRECONDITION (the call has ended) is this item's own.
  auto send_item = [&](const std::string& name) -> absl::Status {
    const std::string id = name.substr(0, name.size() - 4);
    absl::StatusOr<Array> a = ReadNpy(opt["baseline"] + "/" + name);
    if (!a.ok()) return a.status();
    absl::StatusOr<Array> b = ReadNpy(opt["candidate"] + "/" + name);
    if (!b.ok()) return b.status();
    const auto group = groups.find(id);
    const std::string& group_label = group != groups.end() ? group->second : std::string();
    const bool attention = a->shape.size() == 4 && a->shape[2] == a->shape[3];
    if (!attention && a->shape.size() > 3) {
      // Never guessed: a map is [n], [h, w] or [k, n]; attention is [L, H, n, n].
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": expected attention [L, H, n, n] or a map ([n], [h, w], [k, n] or [k, h, w]), got [",
          absl::StrJoin(a->shape, ", "), "]"));
    }
    if (!attention) {
      v1::Tensor ta, tb;
      ToTensor(*a, &ta);
      ToTensor(*b, &tb);
      return stream->AddMaps(id, group_label, ta, tb);
    }
    if (a->shape != b->shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": the baseline and candidate attention shapes differ: [", absl::StrJoin(a->shape, ", "),
          "] and [", absl::StrJoin(b->shape, ", "), "]"));
    }
    client::AttentionView va{a->values.data(), 1, a->shape[0], a->shape[1], a->shape[3]};
    client::AttentionView vb = va;
    vb.data = b->values.data();
    return stream->AddPasses(id, group_label, pass, va, vb, explain_options);
  };
  absl::Status produce_status;
  for (const std::string& name : names) {
    if (absl::Status s = send_item(name); !s.ok()) {
      // A file of ours that cannot be sent ends the audit; an ended call
      // tells its own reason from Finish.
      if (s.code() != absl::StatusCode::kFailedPrecondition) {
        produce_status = s;
        stream->Cancel();
      }
      break;
    }
  }
  absl::StatusOr<v1::AuditReport> finished = stream->Finish();
  if (tty) std::fprintf(stderr, "\n");
  if (!produce_status.ok()) return Fail(produce_status);
  if (!finished.ok()) return Fail(finished.status());
  v1::AuditReport& report = *finished;
  if (opt.count("state")) {
    v1::AuditShardFile file;
    *file.mutable_header() = header;
    file.set_shard_index(shard_index);
    file.set_shard_count(shard_count);
    file.set_dataset_items(dataset_items);
    *file.mutable_state() = std::move(*report.mutable_state());
    report.clear_state();
    std::ofstream state_out(opt["state"], std::ios::binary);
    if (!file.SerializeToOstream(&state_out) || !state_out.flush()) {
      return Fail(absl::PermissionDeniedError(opt["state"] + ": cannot write"));
    }
  }
  if (absl::Status s = WriteReportJson(report, opt["report"]); !s.ok()) return Fail(s);
  std::printf("audited %lld items (%lld refused): %lld drifted; report in %s\n",
              static_cast<long long>(done), static_cast<long long>(refused),
              static_cast<long long>(report.overall().drifted()), opt["report"].c_str());
  if (!pictures.png.empty()) {
    const std::string& dir = pictures.png;
    if (::mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) {
      return Fail(absl::PermissionDeniedError(absl::StrCat("--pictures: ", dir, ": cannot create")));
    }
    if (report.overall().items() == 0) {
      return Fail(absl::FailedPreconditionError("--pictures: no item was compared, so there are no mean maps"));
    }
    const int h = static_cast<int>(report.grid_height()), w = static_cast<int>(report.grid_width());
    const render::Colormap shift_map = *render::FindColormap("coolwarm", "shift");
    const std::pair<const char*, const v1::Tensor*> kMaps[] = {
        {"mean_baseline", &report.overall().mean_baseline()},
        {"mean_candidate", &report.overall().mean_candidate()},
        {"mean_shift", &report.overall().mean_shift()}};
    for (const auto& [name, tensor] : kMaps) {
      std::vector<float> values(tensor->data().size() / sizeof(float));
      std::memcpy(values.data(), tensor->data().data(), values.size() * sizeof(float));
      absl::StatusOr<Written> written =
          WriteHeatmapPng(absl::StrCat(dir, "/", name, ".png"), values, h, w,
                          std::string(name) == "mean_shift" ? shift_map : pictures.colormap, pictures);
      if (!written.ok()) return Fail(written.status());
      std::printf("wrote %s: %s\n", written->path.c_str(), written->summary.c_str());
    }
  }
  return 0;
}

}  // namespace attnroll::cli
