// Who a call is for, and whether it may go on: the one authentication check,
// used by every reactor (through CallState) and, for the services gRPC
// provides (reflection) and unknown methods, by an AuthMetadataProcessor
// that runs before any handler.
//
// With a token file, a call needs the metadata "authorization: Bearer TOKEN"
// with a token of the file, except health (always open, for probes) and,
// unless --info-requires-auth, GetServerInfo and reflection. Without one the
// call is refused UNAUTHENTICATED (refusal "auth") with a message naming the
// metadata key and what is wrong, never the token. The identity a call is
// admitted (its client share), logged and counted under:
//   - the token's name;
//   - else, with mutual TLS, "cn:" + the client certificate's subject CN;
//   - else the peer's host ("ipv4:127.0.0.1").
// Its metrics label is bounded: the token's name, "certificate" or
// "anonymous", never an address.
#ifndef ATTNROLL_SERVER_RPC_AUTH_H_
#define ATTNROLL_SERVER_RPC_AUTH_H_

#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/auth_metadata_processor.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/runtime/config.h"
#include "server/runtime/metrics.h"
#include "server/runtime/token_table.h"

namespace attnroll::rpc {

// What a method discloses or does, for the check.
enum class Access {
  kOpen,  // health: never needs a token
  kInfo,  // GetServerInfo, reflection: a token only with --info-requires-auth
  kWork,  // every other method, unknown ones included
};
// The access of a method path ("/grpc.health.v1.Health/Check").
Access AccessOf(absl::string_view method_path);

struct Identity {
  std::string name;   // the admission key and the logs' client
  std::string label;  // the bounded metrics label
};

struct Authentication {
  absl::Status status;  // OK, or the UNAUTHENTICATED refusal
  Identity identity;    // always set (on refusal: the peer, "anonymous")
};

using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

class Authenticator {
 public:
  // `tokens` may be null (no token file); it must outlive this.
  Authenticator(const runtime::SecurityConfig& config, const runtime::TokenStore* tokens);

  // `metadata`: the call's client metadata; `auth`: its auth context (may be
  // null); `peer`: "ipv4:127.0.0.1:5555".
  Authentication Check(Access access, const Metadata& metadata, const grpc::AuthContext* auth,
                       const std::string& peer) const;

  bool tokens() const { return tokens_ != nullptr; }
  // Whether Check reads the auth context (mutual TLS: the certificate's CN).
  bool reads_certificates() const { return client_certificates_; }

 private:
  const runtime::TokenStore* const tokens_;
  const bool info_requires_auth_;
  const bool client_certificates_;
};

// The processor for TLS (or local) credentials: refuses unauthenticated calls
// to reflection and unknown methods before any handler runs, counting them
// (rpc "ServerReflectionInfo" or "unknown", refusal "auth") and logging them;
// health and attnroll's own methods pass (their reactors check).
std::shared_ptr<grpc::AuthMetadataProcessor> MakeAuthProcessor(const Authenticator* auth,
                                                                runtime::Metrics* metrics);

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_AUTH_H_
