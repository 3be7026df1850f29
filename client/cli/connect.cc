// How the CLI reaches the server: --tls-ca, --tls-cert, --tls-key,
// --tls-server-name, and a token from --token-file or $ATTNROLL_TOKEN.
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
#include "client/cli/commands.h"

namespace attnroll::cli {
namespace {

// True for a HOST:PORT on this machine (a token sent there stays on it).
bool Loopback(const std::string& target) {
  std::string host = target.substr(0, target.rfind(':'));
  for (const char* prefix : {"ipv4:", "ipv6:", "dns:///", "dns:"}) {
    if (host.rfind(prefix, 0) == 0) host = host.substr(std::strlen(prefix));
  }
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
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
  return std::make_unique<client::Client>(*std::move(channel));
}

absl::StatusOr<std::unique_ptr<client::Client>> ConnectClient(const GlobalOptions& global) {
  return ConnectClient(global, grpc::ChannelArguments());
}

}  // namespace attnroll::cli
