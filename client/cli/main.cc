// attnroll: the command-line client. `attnroll [--server HOST:PORT] COMMAND ...`
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "client/cli/commands.h"

namespace {

void PrintUsage() {
  std::printf(
      "attnroll: explain transformers with attention rollout, served by attnroll-server.\n\n"
      "Usage: attnroll [--server TARGET] [--timeout SECONDS] [--lb P] [--attempts N]\n"
      "                [TLS and token options] COMMAND\n"
      "                [options]\n\n"
      "Commands:\n"
      "  demo      a first run: a synthetic ViT-like pass, its map and a picture (no input needed)\n"
      "  explain   send attention from a .npy file, write the saliency maps to a .npy file\n"
      "  info      print the server's version, limits and analyses\n"
      "  compare   compare two saliency maps with every audit metric\n"
      "  explain-pair  one input under two models: both maps and their comparison\n"
      "  audit     audit a dataset: baseline vs candidate maps, per item and aggregated\n"
      "  audit-merge  merge the states of an audit's shards into one report (offline)\n"
      "  bench     closed-loop load test: passes/s, MB/s, latency percentiles, status counts\n"
      "  monitor   live monitoring: each model's window against its pinned baseline (refreshing)\n"
      "  baseline  pin|list|remove the baselines live traffic is compared with\n"
      "  health    the standard gRPC health check (exit 0 when SERVING): a container probe\n"
      "  channel   print the target, load balancing, attempts and service config (no call)\n\n"
      "Global options:\n"
      "  --server TARGET      server address (default 127.0.0.1:50051): HOST:PORT, or a pool:\n"
      "                       dns:///NAME:PORT (every address of NAME) or a static list\n"
      "                       ipv4:A:P1,B:P2 (ipv6:[A]:P1,[B]:P2)\n"
      "  --lb auto|round_robin|pick_first  spread calls over the target's addresses\n"
      "                       (round_robin) or use the first that answers (pick_first);\n"
      "                       auto (default): round_robin for dns:/// and for a list of more\n"
      "                       than one address, pick_first for HOST:PORT\n"
      "  --attempts N         attempts per call on UNAVAILABLE, 1..5 (default 3 with\n"
      "                       round_robin, 1 with pick_first): gRPC retries a call while it\n"
      "                       holds all it sent (256 KiB) and no response began; a pass\n"
      "                       held in memory is sent again whole on another replica\n"
      "                       (`attnroll channel` prints the resulting service config)\n"
      "  --timeout SECONDS    deadline of each call (default 600)\n"
      "  --tls-ca FILE        TLS: PEM CAs the server's certificate must chain to\n"
      "  --tls-cert FILE      mutual TLS: this PEM client certificate (chain), with --tls-key\n"
      "  --tls-key FILE       mutual TLS: the client certificate's PEM private key\n"
      "  --tls-server-name N  the name the server's certificate must carry (default: the host\n"
      "                       of --server)\n"
      "  --token-file FILE    send the token in FILE as \"authorization: Bearer <token>\" on\n"
      "                       every call (default: $ATTNROLL_TOKEN, if set)\n"
      "  --help               this help; `attnroll COMMAND --help` for a command's options\n");
}

}  // namespace

int main(int argc, char** argv) {
  attnroll::cli::GlobalOptions global;
  std::string token_file;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage();
      return 0;
    }
    if (arg.rfind("--", 0) != 0) break;  // the command
    if (i + 1 >= argc) {
      std::fprintf(stderr, "attnroll: %s needs a value\n", arg.c_str());
      return 2;
    }
    const std::string value = argv[++i];
    if (arg == "--server") {
      global.server = value;
    } else if (arg == "--timeout") {
      if (!absl::SimpleAtod(value, &global.timeout_seconds) || global.timeout_seconds <= 0) {
        std::fprintf(stderr, "attnroll: bad --timeout '%s'\n", value.c_str());
        return 2;
      }
    } else if (arg == "--tls-ca") {
      global.connect.ca_file = value;
    } else if (arg == "--tls-cert") {
      global.connect.cert_file = value;
    } else if (arg == "--tls-key") {
      global.connect.key_file = value;
    } else if (arg == "--tls-server-name") {
      global.connect.server_name = value;
    } else if (arg == "--lb") {
      if (!attnroll::client::ParseLbPolicy(value, &global.connect.lb)) {
        std::fprintf(stderr, "attnroll: --lb: expected auto|round_robin|pick_first, got '%s'\n",
                     value.c_str());
        return 2;
      }
    } else if (arg == "--attempts") {
      if (!absl::SimpleAtoi(value, &global.connect.attempts) || global.connect.attempts < 1 ||
          global.connect.attempts > attnroll::client::kMaxAttempts) {
        std::fprintf(stderr, "attnroll: --attempts: expected 1..%d, got '%s'\n",
                     attnroll::client::kMaxAttempts, value.c_str());
        return 2;
      }
    } else if (arg == "--token-file") {
      token_file = value;
    } else {
      std::fprintf(stderr, "attnroll: unknown option %s (see --help)\n", arg.c_str());
      return 2;
    }
  }
  if (const std::string bad = attnroll::cli::FinishConnectOptions(token_file, &global); !bad.empty()) {
    std::fprintf(stderr, "attnroll: %s\n", bad.c_str());
    return 2;
  }
  if (i >= argc) {
    PrintUsage();
    return 2;
  }
  const std::string command = argv[i];
  const std::vector<std::string> rest(argv + i + 1, argv + argc);
  if (command == "explain") return attnroll::cli::RunExplain(global, rest);
  if (command == "info") return attnroll::cli::RunInfo(global, rest);
  if (command == "compare") return attnroll::cli::RunCompare(global, rest);
  if (command == "audit") return attnroll::cli::RunAudit(global, rest);
  if (command == "audit-merge") return attnroll::cli::RunAuditMerge(global, rest);
  if (command == "explain-pair") return attnroll::cli::RunExplainPair(global, rest);
  if (command == "demo") return attnroll::cli::RunDemo(global, rest);
  if (command == "bench") return attnroll::cli::RunBench(global, rest);
  if (command == "health") return attnroll::cli::RunHealth(global, rest);
  if (command == "channel") return attnroll::cli::RunChannel(global, rest);
  if (command == "monitor") return attnroll::cli::RunMonitor(global, rest);
  if (command == "baseline") return attnroll::cli::RunBaseline(global, rest);
  std::fprintf(stderr, "attnroll: unknown command '%s' (see --help)\n", command.c_str());
  return 2;
}
