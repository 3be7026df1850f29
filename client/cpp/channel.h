// How a client reaches an attnroll server: plaintext or TLS (the CA to
// trust, a client certificate and key for mutual TLS, the name the server's
// certificate must carry), a bearer token sent on every call as
// "authorization: Bearer <token>" (a channel interceptor, so every call of
// the channel carries it, raw stub calls included), and, for a pool of
// replicas, gRPC's client-side load balancing and retries (the channel's
// service config).
//
// Targets: HOST:PORT (one server), dns:///NAME:PORT (every address NAME
// resolves to, e.g. a Kubernetes headless service), or a static list
// ipv4:A:P1,B:P2 / ipv6:[A]:P1,[B]:P2.
#ifndef ATTNROLL_CLIENT_CPP_CHANNEL_H_
#define ATTNROLL_CLIENT_CPP_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace attnroll::client {

// How calls are spread over the addresses of a target (gRPC's policies).
enum class LbPolicy {
  // round_robin for a dns: target or a static list of more than one address,
  // pick_first otherwise (a plain HOST:PORT: one server, even when its name
  // resolves to several addresses, e.g. localhost to ::1 and 127.0.0.1).
  kAuto,
  // A connection to every address, calls in turn over the ready ones.
  kRoundRobin,
  // One connection, to the first address that answers.
  kPickFirst,
};

// gRPC caps a retry policy's maxAttempts at 5.
inline constexpr int kMaxAttempts = 5;

struct ConnectOptions {
  // TLS is used when any of the three files or `tls` is set.
  std::string ca_file;    // PEM CAs the server's certificate must chain to (empty: the system's)
  std::string cert_file;  // PEM client certificate (chain) for mutual TLS, with key_file
  std::string key_file;
  bool tls = false;
  // The name checked against the server's certificate instead of the
  // target's host (a certificate for "attnroll.internal" reached by address).
  std::string server_name;
  // Sent on every call; empty: none. Printable ASCII without spaces.
  std::string token;

  // Load balancing over the target's addresses.
  LbPolicy lb = LbPolicy::kAuto;
  // Attempts per call on UNAVAILABLE (a replica that is gone, draining or
  // unreachable), 1..kMaxAttempts; 0: automatic, 3 with round_robin (there is
  // another replica to try) and 1 (no retries) with pick_first. Used twice:
  // as the maxAttempts of gRPC's retry policy, which re-attempts a call only
  // while gRPC still holds everything the call sent (at most 256 KiB, gRPC's
  // per-call retry buffer) and no response has begun; and by Client, which
  // sends a whole pass again as a new call when the call still ended
  // UNAVAILABLE and it holds the pass (see attnroll_client.h).
  int attempts = 0;

  bool UsesTls() const { return tls || !ca_file.empty() || !cert_file.empty() || !key_file.empty(); }
};

// "auto", "round_robin", "pick_first".
const char* LbPolicyName(LbPolicy lb);
// The inverse of LbPolicyName; false for another name.
bool ParseLbPolicy(const std::string& name, LbPolicy* out);
// The policy a channel to `target` uses: `lb`, or kAuto's choice (never kAuto).
LbPolicy EffectiveLbPolicy(const std::string& target, LbPolicy lb);
// The attempts per call a channel to `target` uses: options.attempts, or
// 0's choice (3 with round_robin, 1 with pick_first).
int EffectiveAttempts(const std::string& target, const ConnectOptions& options);
// The service config OpenChannel gives the channel (JSON): the policy as
// loadBalancingConfig, and, with more than one attempt, a retryPolicy for
// the methods of attnroll.v1.AttnrollService that are safe to repeat (not
// PinBaseline and RemoveBaseline: a replica may have done one and died before
// answering; not the health service: a probe asks the replica it reaches),
// retrying UNAVAILABLE only, backoff 0.1 s doubling up to 1 s. A pass the
// client also re-sends itself may so be attempted up to attempts x attempts
// times.
std::string ServiceConfigJson(const std::string& target, const ConnectOptions& options);

// A channel to `target` with `options` (the files are read now) and `args`
// (message size limits are lifted: responses of any size are accepted) and
// ServiceConfigJson(target, options) as its service config.
// INVALID_ARGUMENT naming the option and the file when one cannot be read or
// is missing its pair (a certificate without its key), the token is not
// printable, or attempts is out of range.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target,
                                                          const ConnectOptions& options,
                                                          grpc::ChannelArguments args = {});

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_CHANNEL_H_
