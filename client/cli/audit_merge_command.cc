// `attnroll audit-merge`: merges the states of the N shards of one audit
// (`attnroll audit --shard I/N --state FILE` on N replicas) into the report a
// single audit of every item gives. Offline: no server is called.
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"
#include "proto/cpp/audit_report_proto.h"
#include "server/analysis/audit_report.h"

namespace attnroll::cli {
namespace {

void PrintAuditMergeUsage() {
  std::printf(
      "Usage: attnroll audit-merge --report OUT.json [--allow-missing] STATE.pb...\n\n"
      "Merges the states written by `attnroll audit --shard I/N --state STATE.pb` (one per\n"
      "shard, each audited with the same options) into one report: the report a single audit\n"
      "of every item gives, bit for bit. Every shard 0..N-1 must be given once\n"
      "(--allow-missing merges what is given). Refused: files that are not a state, shards\n"
      "of different audits (their headers, shard counts or dataset sizes differ), a shard\n"
      "given twice, an item in two shards.\n");
}

absl::StatusOr<v1::AuditShardFile> ReadShard(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(path + ": cannot open");
  v1::AuditShardFile file;
  if (!file.ParseFromIstream(&in)) {
    return absl::InvalidArgumentError(path + ": not an audit state (attnroll audit --state)");
  }
  if (file.shard_count() == 0 || file.shard_index() >= file.shard_count() ||
      !file.has_state()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not an audit state (shard ", file.shard_index(), "/", file.shard_count(),
        file.has_state() ? "" : ", no state", ")"));
  }
  return file;
}

// The first field where two shards' headers differ, or "".
std::string HeaderDifference(const v1::AuditHeader& a, const v1::AuditHeader& b) {
  google::protobuf::util::MessageDifferencer differ;
  std::string report;
  differ.ReportDifferencesToString(&report);
  if (differ.Compare(a, b)) return "";
  const size_t end = report.find('\n');
  return end == std::string::npos ? report : report.substr(0, end);
}

}  // namespace

int RunAuditMerge(const GlobalOptions&, const std::vector<std::string>& args) {
  std::string report_path;
  bool allow_missing = false;
  std::vector<std::string> paths;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      PrintAuditMergeUsage();
      return 0;
    }
    if (args[i] == "--report") {
      if (i + 1 >= args.size()) return UsageError("audit-merge", "--report needs a value");
      report_path = args[++i];
    } else if (args[i] == "--allow-missing") {
      allow_missing = true;
    } else if (args[i].rfind("--", 0) == 0) {
      return UsageError("audit-merge", "unknown option " + args[i]);
    } else {
      paths.push_back(args[i]);
    }
  }
  if (report_path.empty()) return UsageError("audit-merge", "--report is required");
  if (paths.empty()) return UsageError("audit-merge", "expected at least one STATE.pb");

  std::vector<v1::AuditShardFile> shards;
  for (const std::string& path : paths) {
    absl::StatusOr<v1::AuditShardFile> file = ReadShard(path);
    if (!file.ok()) return Fail(file.status());
    shards.push_back(*std::move(file));
  }
  const v1::AuditShardFile& first = shards[0];
  std::set<uint32_t> seen;
  for (size_t i = 0; i < shards.size(); ++i) {
    const v1::AuditShardFile& s = shards[i];
    if (i > 0) {
      if (std::string d = HeaderDifference(first.header(), s.header()); !d.empty()) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            paths[i], ": audited with another header than ", paths[0], " (", d, ")")));
      }
      if (s.shard_count() != first.shard_count() || s.dataset_items() != first.dataset_items()) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            paths[i], ": shard of ", s.shard_count(), " over ", s.dataset_items(), " items, ",
            paths[0], ": of ", first.shard_count(), " over ", first.dataset_items(),
            " (not the same audit)")));
      }
    }
    if (!seen.insert(s.shard_index()).second) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          paths[i], ": shard ", s.shard_index(), "/", s.shard_count(), " is given twice")));
    }
  }
  if (!allow_missing && seen.size() != first.shard_count()) {
    std::vector<uint32_t> missing;
    for (uint32_t k = 0; k < first.shard_count(); ++k)
      if (!seen.count(k)) missing.push_back(k);
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "shards ", absl::StrJoin(missing, ", "), " of ", first.shard_count(),
        " are missing (--allow-missing merges what is given)")));
  }

  // One aggregator with the first state's options; every state must have them.
  const analysis::AuditOptions options = v1::StateOptions(first.state());
  absl::StatusOr<analysis::AuditAggregator> aggregator = analysis::AuditAggregator::Create(options);
  if (!aggregator.ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(paths[0], ": state: ", aggregator.status().message())));
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    v1::AuditState options_only = shards[i].state();
    options_only.clear_items();
    options_only.clear_sums();
    v1::AuditState first_options = first.state();
    first_options.clear_items();
    first_options.clear_sums();
    if (!google::protobuf::util::MessageDifferencer::Equals(options_only, first_options)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          paths[i], ": its state was built with other options than ", paths[0],
          " (the servers' limits differ?)")));
    }
    absl::StatusOr<analysis::AuditState> state = v1::FromStateProto(shards[i].state());
    if (!state.ok()) {
      return Fail(absl::Status(state.status().code(), absl::StrCat(paths[i], ": ", state.status().message())));
    }
    if (absl::Status s = aggregator->MergeState(*state); !s.ok()) {
      return Fail(absl::Status(s.code(), absl::StrCat(paths[i], ": ", s.message())));
    }
  }
  v1::AuditReport report;
  v1::ToReportProto(aggregator->Finish(), &report);
  if (absl::Status s = WriteReportJson(report, report_path); !s.ok()) return Fail(s);
  std::printf("merged %zu of %u shards: %lld items, %lld drifted; report in %s\n", shards.size(),
              first.shard_count(), static_cast<long long>(report.overall().items()),
              static_cast<long long>(report.overall().drifted()), report_path.c_str());
  return 0;
}

}  // namespace attnroll::cli
