// The CLI's commands: `attnroll explain`, `info` and `compare`.
#ifndef ATTNROLL_CLIENT_CLI_COMMANDS_H_
#define ATTNROLL_CLIENT_CLI_COMMANDS_H_

#include <string>
#include <vector>

namespace attnroll::cli {

struct GlobalOptions {
  std::string server = "127.0.0.1:50051";
  double timeout_seconds = 600;
};

// Each returns the process exit code: 0 ok, 1 the call failed, 2 bad usage.
int RunExplain(const GlobalOptions& global, const std::vector<std::string>& args);
int RunInfo(const GlobalOptions& global, const std::vector<std::string>& args);
int RunCompare(const GlobalOptions& global, const std::vector<std::string>& args);
void PrintExplainUsage();

}  // namespace attnroll::cli

#endif  // ATTNROLL_CLIENT_CLI_COMMANDS_H_
