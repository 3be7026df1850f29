// `attnroll explain-pair`: the same input under two models (before/after
// fine-tuning), explained with the same options, and their maps compared.
#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/attention_input.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "client/npy/npy.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {
namespace {

int Usage(const std::string& message) { return UsageError("explain-pair", message); }

void PrintPairUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] explain-pair --baseline A.npy --candidate B.npy\n"
      "       [explain options] [--iou-top-k K] [--region MASK.npy] [--out-baseline F.npy]\n"
      "       [--out-candidate F.npy] [--json]\n\n"
      "Both files hold the attention of the same input ([L, H, n, n] or [B, L, H, n, n]) under\n"
      "a baseline and a candidate model. Both are explained with the same options (see\n"
      "`attnroll explain --help`) in one call, and every comparison metric of their maps is\n"
      "printed (a table, or JSON with --json).\n");
}

}  // namespace

int RunExplainPair(const GlobalOptions& global, const std::vector<std::string>& args) {
  static const std::set<std::string> kValued = {"baseline", "candidate", "out-baseline",
                                                "out-candidate", "iou-top-k", "region"};
  const std::set<std::string>& kNotHere = ExplainInputOptions();
  std::map<std::string, std::string> opt, explain;
  const std::string split = SplitExplainArgs(args, kValued, {"json"}, kNotHere, &opt, &explain);
  if (split == "help") {
    PrintPairUsage();
    return 0;
  }
  if (!split.empty()) return Usage(split);
  if (!opt.count("baseline") || !opt.count("candidate")) {
    return Usage("--baseline and --candidate are required");
  }
  v1::PassHeader header;
  client::ExplainOptions options;
  options.timeout = absl::Seconds(global.timeout_seconds);
  if (std::string bad = BuildExplainRequest(explain, &header, &options); !bad.empty()) return Usage(bad);
  v1::CompareOptions compare;
  uint32_t k;
  if (opt.count("iou-top-k")) {
    if (!absl::SimpleAtoi(opt["iou-top-k"], &k)) return Usage("--iou-top-k: expected a count");
    compare.set_top_k(k);
  }
  if (opt.count("region")) {
    absl::StatusOr<Array> mask = ReadNpy(opt["region"]);
    if (!mask.ok()) return Fail(mask.status());
    ToTensor(*mask, compare.mutable_region());
  }
  InputLayout layout = InputLayout::kUnset;
  if (explain.count("layout") && !ParseInputLayout(explain["layout"], &layout)) {
    return Usage("--layout: expected blhnn or lbhnn");
  }
  absl::StatusOr<AttentionInput> a = ReadAttentionInput(opt["baseline"], layout, "--baseline");
  if (!a.ok()) return Fail(a.status());
  absl::StatusOr<AttentionInput> b = ReadAttentionInput(opt["candidate"], layout, "--candidate");
  if (!b.ok()) return Fail(b.status());
  if (b->array.shape != a->array.shape) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--candidate: expected the baseline's shape, ", a->summary, "; got ", b->summary)));
  }
  const bool batched = a->batched;
  client::AttentionView va{a->values(), a->batch, a->layers, a->heads, a->cols};
  client::AttentionView vb = va;
  vb.data = b->values();
  absl::StatusOr<std::unique_ptr<client::Client>> connected = ConnectClient(global);
  if (!connected.ok()) return Fail(connected.status());
  const std::unique_ptr<client::Client> client = *std::move(connected);
  absl::StatusOr<v1::PairResponse> r = client->ExplainPair(header, compare, va, vb, options);
  if (!r.ok()) return Fail(r.status());
  for (const auto& [flag, response] : {std::pair<const char*, const v1::ExplainResponse*>{
                                           "out-baseline", &r->baseline()},
                                       {"out-candidate", &r->candidate()}}) {
    if (!opt.count(flag)) continue;
    absl::StatusOr<Array> maps = AssembleMaps(response->results(0).maps(), batched);
    if (!maps.ok()) return Fail(maps.status());
    if (absl::Status st = WriteNpy(opt[flag], *maps); !st.ok()) return Fail(st);
  }
  PrintComparisons(r->comparisons(), r->baseline().server_version(), opt.count("json") > 0);
  return 0;
}

}  // namespace attnroll::cli
