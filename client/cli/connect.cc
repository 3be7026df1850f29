// How the CLI reaches the server: --tls-ca, --tls-cert, --tls-key,
// --tls-server-name, a token from --token-file or $ATTNROLL_TOKEN, --lb and
// --attempts; `attnroll channel` prints what they make of the target.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_common.h"
#include "client/cli/commands.h"

namespace attnroll::cli {
namespace {

// True for a target on this machine (a token sent there stays on it):
// HOST:PORT, dns:///HOST:PORT, or a static ipv4:/ipv6: list whose every
// address is a loopback one.
bool Loopback(const std::string& target) {
  std::string rest = target;
  for (const char* prefix : {"ipv4:", "ipv6:", "dns:///", "dns:"}) {
    if (rest.rfind(prefix, 0) == 0) {
      rest = rest.substr(std::strlen(prefix));
      break;
    }
  }
  for (absl::string_view address : absl::StrSplit(rest, ',')) {
    const std::string host(address.substr(0, address.rfind(':')));
    if (host != "localhost" && host != "[::1]" && host.rfind("127.", 0) != 0) return false;
  }
  return true;
}

}  // namespace

std::string FinishConnectOptions(const std::string& token_file, GlobalOptions* global) {
  client::ConnectOptions& c = global->connect;
  for (const auto& [flag, path] : {std::pair{"--tls-ca", &c.ca_file}, std::pair{"--tls-cert", &c.cert_file},
                                   std::pair{"--tls-key", &c.key_file}}) {
    if (path->empty()) continue;
    std::ifstream in(*path);
    if (!in) return absl::StrCat(flag, " ", *path, ": cannot read: ", std::strerror(errno));
  }
  if (c.cert_file.empty() != c.key_file.empty()) {
    return c.cert_file.empty() ? "--tls-key needs --tls-cert (the key's certificate)"
                               : "--tls-cert needs --tls-key (the certificate's private key)";
  }
  if (!c.server_name.empty() && !c.UsesTls()) {
    return "--tls-server-name needs TLS (--tls-ca, or --tls-cert and --tls-key)";
  }
  std::string token;
  std::string source;
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) return absl::StrCat("--token-file ", token_file, ": cannot read: ", std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    token = text.str();
    source = absl::StrCat("--token-file ", token_file);
  } else if (const char* env = std::getenv("ATTNROLL_TOKEN"); env != nullptr && env[0] != '\0') {
    token = env;
    source = "ATTNROLL_TOKEN";
  }
  if (!source.empty()) {
    // One token; never echoed back.
    std::vector<std::string> words =
        absl::StrSplit(token, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
    if (words.size() != 1) {
      return absl::StrCat(source, ": expected one token, got ", words.size(), " words");
    }
    for (char ch : words[0]) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x21 || u > 0x7e) return absl::StrCat(source, ": the token is not printable ASCII");
    }
    c.token = words[0];
    if (!c.UsesTls() && !Loopback(global->server)) {
      std::fprintf(stderr, "attnroll: warning: sending the token to %s without TLS (--tls-ca)\n",
                   global->server.c_str());
    }
  }
  return "";
}

absl::StatusOr<std::unique_ptr<client::Client>> ConnectClient(const GlobalOptions& global,
                                                              const grpc::ChannelArguments& args) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      client::OpenChannel(global.server, global.connect, args);
  if (!channel.ok()) return channel.status();
  // Start connecting now: the TCP and HTTP/2 handshakes then run on gRPC's
  // threads while the command reads and fuses its input, not after.
  (*channel)->GetState(/*try_to_connect=*/true);
  return std::make_unique<client::Client>(*std::move(channel),
                                          client::EffectiveAttempts(global.server, global.connect));
}

absl::StatusOr<std::unique_ptr<client::Client>> ConnectClient(const GlobalOptions& global) {
  return ConnectClient(global, grpc::ChannelArguments());
}

int RunChannel(const GlobalOptions& global, const std::vector<std::string>& args) {
  if (!args.empty()) {
    if (args[0] == "--help" || args[0] == "-h") {
      std::printf(
          "Usage: attnroll [--server TARGET] [--lb P] [--attempts N] channel\n\n"
          "Prints, as one JSON object, how the other commands reach TARGET: the target, the\n"
          "load-balancing policy (--lb auto resolved), the attempts per call and the gRPC\n"
          "service config the channel gets. Makes no call.\n");
      return 0;
    }
    return UsageError("channel", absl::StrCat("unexpected argument '", args[0], "'"));
  }
  const client::LbPolicy lb = client::EffectiveLbPolicy(global.server, global.connect.lb);
  std::printf("{\"target\": %s, \"lb_policy\": \"%s\", \"lb_option\": \"%s\", \"attempts\": %d, "
              "\"service_config\": %s}\n",
              JsonString(global.server).c_str(), client::LbPolicyName(lb),
              client::LbPolicyName(global.connect.lb),
              client::EffectiveAttempts(global.server, global.connect),
              client::ServiceConfigJson(global.server, global.connect).c_str());
  return 0;
}

}  // namespace attnroll::cli
