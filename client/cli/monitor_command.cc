// `attnroll monitor`: the live monitoring state (Monitor RPC), refreshed in
// the terminal; `attnroll baseline pin|list|remove`: the pinned baselines.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/cli/pictures.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

std::string ToJson(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &json, o);
  return json;
}

std::vector<float> Floats(const v1::Tensor& t) {
  std::vector<float> v(t.data().size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), t.data().data(), v.size() * sizeof(float));
  return v;
}

// A map on its grid as characters, darker = more mass ("shift": signed,
// '-' lost mass, '+' gained).
void DrawMap(std::ostringstream& out, const std::string& title, const std::vector<float>& v, int h,
             int w, bool signed_map) {
  if (h <= 0 || w <= 0 || static_cast<int>(v.size()) != h * w || h > 40 || w > 80) return;
  static const char kRamp[] = " .:-=+*#%@";
  float top = 0;
  for (float x : v) top = std::max(top, std::abs(x));
  out << "  " << title << "\n";
  for (int r = 0; r < h; ++r) {
    out << "    ";
    for (int c = 0; c < w; ++c) {
      const float x = v[r * w + c];
      if (signed_map) {
        const float f = top > 0 ? x / top : 0;
        out << (f > 0.5f ? "++" : f > 0.1f ? "+ " : f < -0.5f ? "--" : f < -0.1f ? "- " : ". ");
      } else {
        const int level = top > 0 ? static_cast<int>(std::lround(x / top * 9)) : 0;
        out << kRamp[std::clamp(level, 0, 9)] << kRamp[std::clamp(level, 0, 9)];
      }
    }
    out << "\n";
  }
}

std::string Render(const v1::MonitorResponse& r, const std::string& server) {
  std::ostringstream out;
  const v1::MonitorConfig& c = r.config();
  out << "attnroll monitor  " << server << "  "
      << absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::Now(), absl::LocalTimeZone()) << "\n";
  out << "window: " << c.buckets() << " buckets of "
      << (c.bucket_seconds() > 0 ? absl::StrCat(c.bucket_seconds(), " s") : absl::StrCat(c.bucket_samples(), " samples"))
      << "\n";
  for (const v1::ModelMonitor& m : r.models()) {
    out << "\nmodel " << m.model() << "  baseline "
        << (m.baseline().empty() ? std::string("(none pinned)") : m.baseline()) << "\n";
    out << absl::StrFormat("  passes %lld (sampled %lld)  samples %lld  skipped shape %lld, no mass %lld, group overflow %lld\n",
                           static_cast<long long>(m.passes()), static_cast<long long>(m.sampled_passes()),
                           static_cast<long long>(m.samples()), static_cast<long long>(m.skipped().shape()),
                           static_cast<long long>(m.skipped().no_mass()),
                           static_cast<long long>(m.skipped().group_overflow()));
    for (const v1::WindowDrift& w : m.windows()) {
      out << "  " << (w.group().empty() ? std::string("window") : "group " + w.group()) << ": "
          << w.live().samples() << " samples"
          << (w.reference().empty() ? "" : ", against the baseline's " + w.reference()) << "\n";
      for (const v1::DriftNumber& d : w.drift()) {
        if (d.defined()) {
          out << absl::StrFormat("    %-20s %12.6f\n", d.metric(), d.value());
        } else if (w.group().empty()) {
          out << absl::StrFormat("    %-20s %12s  (%s)\n", d.metric(), "-", d.note());
        }
      }
      if (w.group().empty() && w.live().has_mean_map()) {
        const std::vector<float> live = Floats(w.live().mean_map());
        DrawMap(out, "live mean map", live, m.grid_height(), m.grid_width(), false);
        if (w.baseline().has_mean_map()) {
          std::vector<float> shift = Floats(w.baseline().mean_map());
          for (size_t i = 0; i < shift.size() && i < live.size(); ++i) shift[i] = live[i] - shift[i];
          DrawMap(out, "shift (live - baseline; + gained, - lost)", shift, m.grid_height(),
                  m.grid_width(), true);
        }
      }
    }
  }
  return out.str();
}

// --png DIR: the live mean map (viridis) and its shift from the baseline
// (coolwarm, centred on zero) of every model on a grid, drawn as explain's and
// audit's pictures are (exit 1 when a picture cannot be written).
int WritePngs(const v1::MonitorResponse& r, const std::string& dir) {
  const PictureOptions alone;  // no image under the maps
  const render::Colormap shift_map = *render::FindColormap("coolwarm", "shift");
  for (const v1::ModelMonitor& m : r.models()) {
    const v1::WindowDrift* overall = nullptr;
    for (const v1::WindowDrift& w : m.windows()) {
      if (w.group().empty()) overall = &w;
    }
    if (m.grid_height() == 0 || overall == nullptr || !overall->live().has_mean_map()) {
      std::printf("model %s: no picture (%s)\n", m.model().c_str(),
                  m.grid_height() == 0 ? "its maps have no grid" : "its window is empty");
      continue;
    }
    const std::vector<float> live = Floats(overall->live().mean_map());
    const std::string mean_path = dir + "/" + m.model() + "_mean.png";
    absl::StatusOr<Written> mean =
        WriteHeatmapPng(mean_path, live, m.grid_height(), m.grid_width(), alone.colormap, alone);
    if (!mean.ok()) return Fail(mean.status());
    std::printf("model %s: live mean map %s: %s\n", m.model().c_str(), mean_path.c_str(),
                mean->summary.c_str());
    if (!overall->baseline().has_mean_map()) {
      std::printf("model %s: no shift picture (no baseline pinned)\n", m.model().c_str());
      continue;
    }
    std::vector<float> shift = Floats(overall->baseline().mean_map());
    if (shift.size() != live.size()) continue;
    for (size_t i = 0; i < shift.size(); ++i) shift[i] = live[i] - shift[i];
    const std::string shift_path = dir + "/" + m.model() + "_shift.png";
    absl::StatusOr<Written> shifted =
        WriteHeatmapPng(shift_path, shift, m.grid_height(), m.grid_width(), shift_map, alone);
    if (!shifted.ok()) return Fail(shifted.status());
    std::printf("model %s: shift map %s: %s\n", m.model().c_str(), shift_path.c_str(),
                shifted->summary.c_str());
  }
  return 0;
}

int MonitorUsage(const std::string& m) { return UsageError("monitor", m); }

void PrintMonitorUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] monitor [--model M] [--interval S] [--count N] [--once]\n"
      "       [--json] [--maps] [--png DIR]\n\n"
      "Shows every monitored model's live window against its pinned baseline: the drift numbers\n"
      "(JS divergence and EMD of the mean maps, centre-of-mass shift, region shares, per-pass\n"
      "distributions), and on a grid the live mean map and its shift from the baseline. Refreshes\n"
      "every --interval seconds (default 2) until interrupted, or --count times; --once: one view.\n"
      "--json: the Monitor response as JSON, once (--maps: with the mean maps).\n"
      "--png DIR: once, writes DIR/MODEL_mean.png (the live mean map, grey: white = most mass) and\n"
      "DIR/MODEL_shift.png (live - baseline: red gained, blue lost) for every model on a grid.\n");
}

int BaselineUsage(const std::string& m) { return UsageError("baseline", m); }

void PrintBaselineUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] baseline pin NAME --model M\n"
      "                (--from-report REPORT.json [--side baseline|candidate] | --from-live)\n"
      "                [--region MASK.npy] [--region-name NAME] [--json]\n"
      "       attnroll baseline list [--json]\n"
      "       attnroll baseline remove NAME\n\n"
      "pin: makes the reference of model M from an `attnroll audit` report (its baseline side by\n"
      "default) or from M's live window as it is now, and stores it in the server's --data-dir.\n"
      "--region: a mask of the map's length (non-zero = inside) for region shares; --region-name\n"
      "names it in the attnroll_region_share metric (default \"region\").\n");
}

void PrintSummary(const v1::BaselineSummary& b) {
  std::printf("%-24s model %-16s %-6s %8lld samples  n=%u%s%s\n", b.name().c_str(), b.model().c_str(),
              b.source() == v1::BASELINE_SOURCE_LIVE ? "live" : "audit", static_cast<long long>(b.samples()),
              b.map_length(),
              b.grid_height() > 0 ? absl::StrCat(" grid ", b.grid_height(), "x", b.grid_width()).c_str() : "",
              b.region_name().empty() ? "" : (" region " + b.region_name()).c_str());
}

}  // namespace

int RunMonitor(const GlobalOptions& global, const std::vector<std::string>& args) {
  std::map<std::string, std::string> opt;
  const std::string parsed =
      ParseOptions(args, {"model", "interval", "count", "png"}, {"once", "json", "maps"}, &opt);
  if (parsed == "help") {
    PrintMonitorUsage();
    return 0;
  }
  if (!parsed.empty()) return MonitorUsage(parsed);
  if (opt.count("png") && opt.count("json")) return MonitorUsage("--png and --json: expected one of them");
  double interval = 2;
  if (opt.count("interval") && (!absl::SimpleAtod(opt["interval"], &interval) || !(interval > 0))) {
    return MonitorUsage("--interval: expected seconds > 0");
  }
  int64_t count = -1;
  if (opt.count("count") && (!absl::SimpleAtoi(opt["count"], &count) || count < 1)) {
    return MonitorUsage("--count: expected a count >= 1");
  }
  if (opt.count("once") || opt.count("json") || opt.count("png")) count = 1;
  v1::MonitorRequest request;
  if (opt.count("model")) request.set_model(opt["model"]);
  const bool json = opt.count("json") > 0;
  request.set_include_maps(!json || opt.count("maps") > 0);
  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  const bool tty = isatty(fileno(stdout));
  for (int64_t i = 0; count < 0 || i < count; ++i) {
    if (i > 0) absl::SleepFor(absl::Seconds(interval));
    absl::StatusOr<v1::MonitorResponse> r =
        client->Monitor(request, absl::Seconds(std::min(global.timeout_seconds, 60.0)));
    if (!r.ok()) return Fail(r.status());
    if (opt.count("png")) return WritePngs(*r, opt["png"]);
    if (json) {
      std::printf("%s\n", ToJson(*r).c_str());
    } else {
      if (tty) std::printf("\033[H\033[2J");  // home, clear: a refreshing view
      std::printf("%s", Render(*r, global.server).c_str());
      if (!tty && (count < 0 || i + 1 < count)) std::printf("\n----\n");
    }
    std::fflush(stdout);
  }
  return 0;
}

int RunBaseline(const GlobalOptions& global, const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    PrintBaselineUsage();
    return args.empty() ? 2 : 0;
  }
  const std::string verb = args[0];
  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  const absl::Duration timeout = absl::Seconds(std::min(global.timeout_seconds, 60.0));
  if (verb == "list") {
    std::map<std::string, std::string> opt;
    const std::string parsed = ParseOptions({args.begin() + 1, args.end()}, {}, {"json"}, &opt);
    if (parsed == "help") {
      PrintBaselineUsage();
      return 0;
    }
    if (!parsed.empty()) return BaselineUsage(parsed);
    absl::StatusOr<v1::ListBaselinesResponse> r = client->ListBaselines(timeout);
    if (!r.ok()) return Fail(r.status());
    if (opt.count("json")) {
      std::printf("%s\n", ToJson(*r).c_str());
    } else {
      if (r->baselines().empty()) std::printf("no baseline is pinned\n");
      for (const v1::BaselineSummary& b : r->baselines()) PrintSummary(b);
    }
    return 0;
  }
  if (verb != "pin" && verb != "remove") {
    return BaselineUsage("expected pin, list or remove, got '" + verb + "'");
  }
  if (args.size() < 2 || args[1].rfind("--", 0) == 0) return BaselineUsage(verb + " needs a NAME");
  const std::string name = args[1];
  std::map<std::string, std::string> opt;
  const std::string parsed =
      verb == "remove"
          ? ParseOptions({args.begin() + 2, args.end()}, {}, {}, &opt)
          : ParseOptions({args.begin() + 2, args.end()},
                         {"model", "from-report", "side", "region", "region-name"}, {"from-live", "json"}, &opt);
  if (parsed == "help") {
    PrintBaselineUsage();
    return 0;
  }
  if (!parsed.empty()) return BaselineUsage(parsed);
  if (verb == "remove") {
    absl::StatusOr<v1::RemoveBaselineResponse> r = client->RemoveBaseline(name, timeout);
    if (!r.ok()) return Fail(r.status());
    std::printf("removed baseline %s\n", name.c_str());
    return 0;
  }
  if (!opt.count("model")) return BaselineUsage("pin needs --model M");
  if (opt.count("from-report") == opt.count("from-live")) {
    return BaselineUsage("pin needs exactly one of --from-report REPORT.json and --from-live");
  }
  v1::PinBaselineRequest request;
  request.set_name(name);
  request.set_model(opt["model"]);
  if (opt.count("from-report")) {
    std::ifstream in(opt["from-report"]);
    if (!in) return Fail(absl::NotFoundError(opt["from-report"] + ": cannot open"));
    std::stringstream text;
    text << in.rdbuf();
    v1::BaselineFromAudit* audit = request.mutable_audit();
    if (!google::protobuf::util::JsonStringToMessage(text.str(), audit->mutable_report()).ok()) {
      return Fail(absl::InvalidArgumentError(opt["from-report"] + ": not an attnroll audit report (JSON)"));
    }
    const std::string side = opt.count("side") ? opt["side"] : "baseline";
    if (side != "baseline" && side != "candidate") return BaselineUsage("--side: expected baseline or candidate");
    audit->set_side(side == "candidate" ? v1::AUDIT_SIDE_CANDIDATE : v1::AUDIT_SIDE_BASELINE);
  } else {
    if (opt.count("side")) return BaselineUsage("--side is only used with --from-report");
    request.mutable_live();
  }
  if (opt.count("region")) {
    absl::StatusOr<Array> mask = ReadNpy(opt["region"]);
    if (!mask.ok()) return Fail(mask.status());
    ToTensor(*mask, request.mutable_region());
  }
  if (opt.count("region-name")) request.set_region_name(opt["region-name"]);
  absl::StatusOr<v1::PinBaselineResponse> r = client->PinBaseline(request, timeout);
  if (!r.ok()) return Fail(r.status());
  if (opt.count("json")) {
    std::printf("%s\n", ToJson(*r).c_str());
  } else {
    std::printf("pinned: ");
    PrintSummary(r->baseline());
    std::printf("stored in %s\n", r->path().c_str());
  }
  return 0;
}

}  // namespace attnroll::cli
