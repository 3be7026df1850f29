// The CLI's commands: `attnroll explain`, `info`, `compare`, `explain-pair`,
// `audit`, `bench` and `health`.
#ifndef ATTNROLL_CLIENT_CLI_COMMANDS_H_
#define ATTNROLL_CLIENT_CLI_COMMANDS_H_

#include <map>
#include <set>
#include <string>
#include <vector>

#include "attnroll/v1/attnroll.pb.h"
#include "client/cpp/attnroll_client.h"

namespace attnroll::cli {

struct GlobalOptions {
  std::string server = "127.0.0.1:50051";
  double timeout_seconds = 600;
  // --tls-ca, --tls-cert, --tls-key, --tls-server-name; the token from
  // --token-file or $ATTNROLL_TOKEN; --lb, --attempts.
  client::ConnectOptions connect;
};

// Completes the connection options after the global flags: reads the token
// of `token_file` (else $ATTNROLL_TOKEN), checks the TLS files can be read
// and come in pairs. "" or the usage message.
std::string FinishConnectOptions(const std::string& token_file, GlobalOptions* global);
// A client of the server the global options name, over TLS and with a token
// as they say.
absl::StatusOr<std::unique_ptr<client::Client>> ConnectClient(const GlobalOptions& global);
// The same for a channel with extra arguments (bench: one connection each).
absl::StatusOr<std::unique_ptr<client::Client>> ConnectClient(const GlobalOptions& global,
                                                              const grpc::ChannelArguments& args);

// Each returns the process exit code: 0 ok, 1 the call failed, 2 bad usage.
int RunExplain(const GlobalOptions& global, const std::vector<std::string>& args);
int RunInfo(const GlobalOptions& global, const std::vector<std::string>& args);
int RunCompare(const GlobalOptions& global, const std::vector<std::string>& args);
int RunAudit(const GlobalOptions& global, const std::vector<std::string>& args);
// Merges shard states into one audit report (offline).
int RunAuditMerge(const GlobalOptions& global, const std::vector<std::string>& args);
// Live monitoring: `attnroll monitor` and `attnroll baseline pin|list|remove`.
int RunMonitor(const GlobalOptions& global, const std::vector<std::string>& args);
int RunBaseline(const GlobalOptions& global, const std::vector<std::string>& args);
// Closed-loop load test (exit 0 once the run completed, errors counted; 1
// when the server cannot be reached; 2 on bad usage).
int RunBench(const GlobalOptions& global, const std::vector<std::string>& args);
// Prints the target, load-balancing policy, attempts and service config the
// global options make (no call).
int RunChannel(const GlobalOptions& global, const std::vector<std::string>& args);
// The standard gRPC health check (exit 0 only for SERVING): a container probe.
int RunHealth(const GlobalOptions& global, const std::vector<std::string>& args);
// A first run: a synthetic ViT-like pass with a planted salient block, its map
// and the map over a synthetic picture.
int RunDemo(const GlobalOptions& global, const std::vector<std::string>& args);
// `explain` with --encoder/--decoder/--cross: the parsed options of explain.
// The flags of `explain` (shared with `audit`): known, and whether it takes a value.
bool IsExplainOption(const std::string& name, bool* takes_value);
// Splits the arguments of a command that also takes explain's options:
// `own` gets the command's valued options (names in own_valued) and the flags
// in own_flags, `explain` gets explain's options except those in not_here.
// Returns "" , "help" for --help, or a usage message.
std::string SplitExplainArgs(const std::vector<std::string>& args,
                             const std::set<std::string>& own_valued,
                             const std::set<std::string>& own_flags,
                             const std::set<std::string>& not_here,
                             std::map<std::string, std::string>* own,
                             std::map<std::string, std::string>* explain);
// Explain's options about inputs only `explain` reads (gradients, side
// inputs, encoder-decoder stacks): commands that read their own inputs refuse
// them instead of ignoring them.
const std::set<std::string>& ExplainInputOptions();
// Builds the pass header's analysis and the call options from explain's flags
// (everything but the input files); "" or the usage message of a bad flag.
std::string BuildExplainRequest(std::map<std::string, std::string>& opt, v1::PassHeader* header,
                                client::ExplainOptions* options);
// Every metric of each comparison: a table, or one JSON object.
void PrintComparisons(const google::protobuf::RepeatedPtrField<v1::Comparison>& comparisons,
                      const std::string& server_version, bool json);
int RunExplainPair(const GlobalOptions& global, const std::vector<std::string>& args);
int RunEncoderDecoderExplain(const GlobalOptions& global, std::map<std::string, std::string>& opt);
void PrintExplainUsage();

}  // namespace attnroll::cli

#endif  // ATTNROLL_CLIENT_CLI_COMMANDS_H_
