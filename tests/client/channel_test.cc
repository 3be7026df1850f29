// The client's connection options: what is refused before any call (a
// certificate without its key, an unreadable file, a name without TLS, a
// token gRPC metadata cannot carry, attempts out of range), naming the
// option; the load-balancing policy and service config each target gets.
// TLS and tokens against a server: tests/rpc/credentials_test.cc,
// tests/rpc/auth_test.cc; round robin over servers:
// tests/client/attnroll_client_test.cc and tests/e2e/scale_out_test.py.
#include "client/cpp/channel.h"

#include <string>
#include <vector>

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

TEST(ChannelTest, AttemptsOutsideOneToFiveAreRefused) {
  ConnectOptions o;
  for (int attempts : {-1, 6}) {
    o.attempts = attempts;
    EXPECT_THAT(OpenChannel("127.0.0.1:9", o).status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         "attempts: expected 1..5 (0: automatic), got " + std::to_string(attempts)));
  }
  for (int attempts : {0, 1, 5}) {
    o.attempts = attempts;
    EXPECT_THAT(OpenChannel("ipv4:127.0.0.1:9,127.0.0.1:10", o).status(), IsOk()) << attempts;
  }
}

TEST(ChannelTest, AutoBalancesPoolsRoundRobinAndOneServerPickFirst) {
  struct Case {
    std::string target;
    LbPolicy lb;
    LbPolicy want;
    int want_attempts;
  };
  const LbPolicy rr = LbPolicy::kRoundRobin, pf = LbPolicy::kPickFirst, automatic = LbPolicy::kAuto;
  for (const Case& c : std::vector<Case>{
           {"127.0.0.1:50051", automatic, pf, 1},
           {"localhost:50051", automatic, pf, 1},  // one server on ::1 and 127.0.0.1
           {"ipv4:127.0.0.1:50051", automatic, pf, 1},
           {"ipv4:127.0.0.1:1001,127.0.0.1:1002", automatic, rr, 3},
           {"ipv6:[::1]:1001,[::1]:1002,[::1]:1003", automatic, rr, 3},
           {"dns:///attnroll-headless.attnroll.svc:50051", automatic, rr, 3},
           {"dns:///one-name:50051", automatic, rr, 3},
           {"127.0.0.1:50051", rr, rr, 3},
           {"dns:///attnroll-headless.attnroll.svc:50051", pf, pf, 1},
       }) {
    EXPECT_EQ(EffectiveLbPolicy(c.target, c.lb), c.want) << c.target;
    ConnectOptions o;
    o.lb = c.lb;
    EXPECT_EQ(EffectiveAttempts(c.target, o), c.want_attempts) << c.target;
    o.attempts = 2;
    EXPECT_EQ(EffectiveAttempts(c.target, o), 2) << c.target;
  }
  LbPolicy parsed = LbPolicy::kAuto;
  EXPECT_TRUE(ParseLbPolicy("round_robin", &parsed));
  EXPECT_EQ(parsed, rr);
  EXPECT_TRUE(ParseLbPolicy("pick_first", &parsed));
  EXPECT_EQ(parsed, pf);
  EXPECT_TRUE(ParseLbPolicy("auto", &parsed));
  EXPECT_EQ(parsed, automatic);
  EXPECT_FALSE(ParseLbPolicy("grpclb", &parsed));
  EXPECT_FALSE(ParseLbPolicy("Round_Robin", &parsed));
}

TEST(ChannelTest, ServiceConfigNamesThePolicyAndRetriesUnavailableOnTheApiOnly) {
  ConnectOptions o;
  EXPECT_EQ(ServiceConfigJson("127.0.0.1:50051", o), R"({"loadBalancingConfig": [{"pick_first": {}}]})");
  EXPECT_EQ(ServiceConfigJson("ipv4:127.0.0.1:1,127.0.0.1:2", o),
            R"({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{"name": [)"
            R"({"service": "attnroll.v1.AttnrollService", "method": "Explain"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "ExplainStream"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "GetServerInfo"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "Compare"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "ExplainPair"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "Audit"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "Monitor"}, )"
            R"({"service": "attnroll.v1.AttnrollService", "method": "ListBaselines"}], )"
            R"("retryPolicy": {"maxAttempts": 3, )"
            R"("initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2, )"
            R"("retryableStatusCodes": ["UNAVAILABLE"]}}]})");
  o.attempts = 1;  // round robin without retries
  EXPECT_EQ(ServiceConfigJson("dns:///pool:50051", o), R"({"loadBalancingConfig": [{"round_robin": {}}]})");
  o.attempts = 5;
  o.lb = LbPolicy::kPickFirst;
  EXPECT_THAT(ServiceConfigJson("dns:///pool:50051", o),
              ::testing::StartsWith(R"({"loadBalancingConfig": [{"pick_first": {}}], "methodConfig": )"));
  EXPECT_THAT(ServiceConfigJson("dns:///pool:50051", o), ::testing::HasSubstr(R"("maxAttempts": 5,)"));
}

}  // namespace
}  // namespace attnroll::client
