// How a client reaches an attnroll server: plaintext or TLS (the CA to
// trust, a client certificate and key for mutual TLS, the name the server's
// certificate must carry), and a bearer token sent on every call as
// "authorization: Bearer <token>" (a channel interceptor, so every call of
// the channel carries it, raw stub calls included).
#ifndef ATTNROLL_CLIENT_CPP_CHANNEL_H_
#define ATTNROLL_CLIENT_CPP_CHANNEL_H_

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace attnroll::client {

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

  bool UsesTls() const { return tls || !ca_file.empty() || !cert_file.empty() || !key_file.empty(); }
};

// A channel to HOST:PORT with `options` (the files are read now) and `args`
// (message size limits are lifted: responses of any size are accepted).
// INVALID_ARGUMENT naming the option and the file when one cannot be read or
// is missing its pair (a certificate without its key), or the token is not
// printable.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target,
                                                          const ConnectOptions& options,
                                                          grpc::ChannelArguments args = {});

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_CHANNEL_H_
