// The client's connection options: what is refused before any call (a
// certificate without its key, an unreadable file, a name without TLS, a
// token gRPC metadata cannot carry), naming the option. TLS and tokens
// against a server: tests/rpc/credentials_test.cc, tests/rpc/auth_test.cc.
#include "client/cpp/channel.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/status_matchers.h"

namespace attnroll::client {
namespace {

using testing::IsOk;
using testing::StatusIs;

TEST(ChannelTest, BadOptionsAreRefusedNamingTheOption) {
  const std::string target = "127.0.0.1:9";  // never dialled: channels connect lazily
  ConnectOptions o;
  EXPECT_THAT(OpenChannel(target, o).status(), IsOk());
  o.cert_file = "/etc/hostname";
  EXPECT_THAT(OpenChannel(target, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "cert_file: needs key_file (the certificate's key)"));
  o = {};
  o.key_file = "/etc/hostname";
  EXPECT_THAT(OpenChannel(target, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "key_file: needs cert_file (the key's certificate)"));
  o = {};
  o.ca_file = "/nonexistent/ca.pem";
  EXPECT_THAT(OpenChannel(target, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ca_file /nonexistent/ca.pem: cannot read: No such file or directory"));
  o = {};
  o.server_name = "attnroll.example";
  EXPECT_THAT(OpenChannel(target, o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "server_name: only with TLS (ca_file, cert_file or tls)"));
  for (const std::string& token : {std::string("with space"), std::string("tab\there"), std::string("caf\xc3\xa9")}) {
    o = {};
    o.token = token;
    EXPECT_THAT(OpenChannel(target, o).status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "token: expected printable ASCII without spaces (what gRPC metadata can carry)"))
        << token;
  }
  o = {};
  o.tls = true;
  o.server_name = "attnroll.example";
  o.token = "a-fine-token-0123456789";
  EXPECT_TRUE(o.UsesTls());
  EXPECT_THAT(OpenChannel(target, o).status(), IsOk());
}

}  // namespace
}  // namespace attnroll::client
