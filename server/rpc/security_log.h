// What the operator should know about the server's exposure, logged once at
// start (lifecycle lines, never dropped by the rate limit):
//   INFO tls: gRPC port: certificate="CN=..., issuer CN=..., not after ..." client_certificates=required ...
//   INFO tokens loaded: file=... tokens=2 names=alice,bob info_requires_auth=true
//   INFO tls: metrics port: client_certificates=required
// and warnings: a certificate not valid now, a token file others can read,
// and, for every listen address anyone who can reach it may call
// (runtime::OpenToTheNetwork),
//   WARNING open to the network: listen=0.0.0.0:50051 tls=off message="no TLS and no --token-file: ..."
#ifndef ATTNROLL_SERVER_RPC_SECURITY_LOG_H_
#define ATTNROLL_SERVER_RPC_SECURITY_LOG_H_

#include "server/rpc/metrics_endpoint.h"
#include "server/rpc/tls_files.h"
#include "server/runtime/config.h"
#include "server/runtime/token_table.h"

namespace attnroll::rpc {

// Any pointer may be null (that part is off).
void LogSecurity(const runtime::ServerConfig& config, const WatchedTlsFiles* tls,
                 const runtime::TokenStore* tokens, const MetricsEndpoint* metrics);

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_SECURITY_LOG_H_
