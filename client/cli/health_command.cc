// `attnroll health`: the standard gRPC health check, as a container probe
// runs it (exit 0 only when the server answers SERVING).
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"

namespace attnroll::cli {
namespace {

void PrintHealthUsage() {
  std::printf(
      "Usage: attnroll [--server HOST:PORT] [--timeout SECONDS] health [--service NAME]\n"
      "  Asks the server's grpc.health.v1.Health/Check for NAME (default \"\": the whole\n"
      "  server; attnroll.v1.AttnrollService: the API) and prints the status.\n"
      "  Exit 0 when it is SERVING; 1 when it is anything else (NOT_SERVING while the server\n"
      "  drains on SIGTERM) or the call fails (nothing listening, deadline: --timeout);\n"
      "  2 on bad usage. A container probe: attnroll --timeout 2 health\n");
}

}  // namespace

int RunHealth(const GlobalOptions& global, const std::vector<std::string>& args) {
  std::map<std::string, std::string> opt;
  const std::string parsed = ParseOptions(args, {"service"}, {}, &opt);
  if (parsed == "help") {
    PrintHealthUsage();
    return 0;
  }
  if (!parsed.empty()) return UsageError("health", parsed);
  const std::string service = opt.count("service") > 0 ? opt["service"] : "";
  auto client = client::Client::Connect(global.server);
  absl::StatusOr<client::Client::ServingStatus> status =
      client->CheckHealth(service, absl::Seconds(global.timeout_seconds));
  if (!status.ok()) return Fail(status.status());
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (*status != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::fprintf(stderr, "attnroll: health: %s%s%s is %s\n", global.server.c_str(),
                 service.empty() ? "" : " service ", service.c_str(), name.c_str());
    return 1;
  }
  std::printf("%s\n", name.c_str());
  return 0;
}

}  // namespace attnroll::cli
