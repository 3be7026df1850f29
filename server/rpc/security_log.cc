#include "server/rpc/security_log.h"

#include <sys/stat.h>

#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/runtime/logging.h"

namespace attnroll::rpc {

void LogSecurity(const runtime::ServerConfig& c, const WatchedTlsFiles* tls,
                 const runtime::TokenStore* tokens, const MetricsEndpoint* metrics) {
  using runtime::LogLifecycle;
  using runtime::LogLevel;
  const runtime::SecurityConfig& t = c.security;
  if (tls != nullptr) {
    const auto m = tls->current();
    LogLifecycle(LogLevel::kInfo, "tls: gRPC port",
        {{"certificate", m->Describe()},
         {"client_certificates", t.tls_client_ca.empty() ? "not requested" : "required"},
         {"reload_seconds", t.tls_reload_seconds}});
    if (m->ExpiredOrNotYetValid()) {
      LogLifecycle(LogLevel::kWarning, "tls: the gRPC port's certificate is not valid now",
          {{"certificate", m->Describe()}});
    }
  }
  if (tokens != nullptr) {
    const auto table = tokens->table();
    LogLifecycle(LogLevel::kInfo, "tokens loaded",
        {{"file", tokens->path()}, {"tokens", table->size()}, {"names", absl::StrJoin(table->names(), ",")},
         {"info_requires_auth", t.info_requires_auth}});
    struct stat st;
    if (stat(tokens->path().c_str(), &st) == 0 && (st.st_mode & (S_IRGRP | S_IROTH)) != 0) {
      LogLifecycle(LogLevel::kWarning, "tokens: the token file is readable by other users",
          {{"file", tokens->path()}, {"mode", absl::StrFormat("%04o", st.st_mode & 0777)}});
    }
  }
  if (metrics != nullptr && metrics->tls()) {
    LogLifecycle(LogLevel::kInfo, "tls: metrics port",
        {{"client_certificates", t.metrics_tls_client_ca.empty() ? "not requested" : "required"}});
  }
  // Anyone who can reach a non-loopback address can use an open server.
  for (const std::string& a : runtime::OpenToTheNetwork(c)) {
    LogLifecycle(LogLevel::kWarning, "open to the network",
        {{"listen", a},
         {"tls", t.tls() ? "on" : "off"},
         {"message", runtime::OpenToTheNetworkMessage(t)}});
  }
}

}  // namespace attnroll::rpc
