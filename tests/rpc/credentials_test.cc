// TLS and mutual TLS on the gRPC port, with certificates made at test time
// by the openssl command: an Explain over TLS gives the right map; a client
// that does not trust the server's CA, or speaks plaintext, cannot connect
// (UNAVAILABLE); with mutual TLS a client without a certificate, or with one
// from another CA, is refused, and a certificate's CN is the caller's
// identity; certificates rotate without a restart; files that are wrong stop
// the start naming their flag.
#include <memory>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/testutil/metrics_testutil.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_certs.h"

namespace attnroll::rpc {
namespace {

using ::testing::_;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Pointwise;
using testing::IsOk;
using testing::MetricValue;
using testing::StatusIs;
using testing::TestCerts;
using testing::UniformAttention;
using testing::UniformRollout;
using testing::ViewOf;

class TlsTest : public testing::ServerTest {
 protected:
  static void SetUpTestSuite() { certs_ = new TestCerts(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }
  // No plaintext server: each test starts its own.
  void SetUp() override { ASSERT_TRUE(certs_->ok()) << certs_->error(); }

  static std::string P(const std::string& name) { return certs_->Path(name); }
  static runtime::ServerConfig TlsConfig(bool mutual) {
    runtime::ServerConfig c = Config();
    c.security.tls_cert = P("server.pem");
    c.security.tls_key = P("server.key");
    if (mutual) c.security.tls_client_ca = P("ca.pem");
    return c;
  }
  std::string Target() const { return absl::StrCat("127.0.0.1:", server_->port()); }

  // A client with its own connection (channels of one target would share one).
  absl::StatusOr<std::unique_ptr<client::Client>> Connect(client::ConnectOptions o) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    absl::StatusOr<std::shared_ptr<grpc::Channel>> ch = client::OpenChannel(Target(), o, args);
    if (!ch.ok()) return ch.status();
    return std::make_unique<client::Client>(*std::move(ch));
  }
  static client::ConnectOptions Trusting(const std::string& ca, const std::string& who = "") {
    client::ConnectOptions o;
    o.ca_file = P(ca);
    if (!who.empty()) {
      o.cert_file = P(who + ".pem");
      o.key_file = P(who + ".key");
    }
    return o;
  }

  // An Explain of uniform attention; its map against the closed form.
  static absl::Status ExplainUniform(client::Client& c) {
    const auto a = UniformAttention(1, 3, 2, 16);
    absl::StatusOr<v1::ExplainResponse> r = c.Explain(testing::RolloutHeader(a), ViewOf(a), {});
    if (!r.ok()) return r.status();
    EXPECT_THAT(testing::MapValues(r->results(0).maps(0)),
                Pointwise(FloatNear(1e-6), UniformRollout(16, 3, 0)));
    return absl::OkStatus();
  }
  static absl::Status Info(client::Client& c) { return c.GetServerInfo(absl::Seconds(10)).status(); }

  static TestCerts* certs_;
};
TestCerts* TlsTest::certs_ = nullptr;

TEST_F(TlsTest, AnExplainOverTlsGivesTheMapAndAClientWithoutTheCaCannotConnect) {
  StartServer(TlsConfig(false));
  auto good = Connect(Trusting("ca.pem"));
  ASSERT_THAT(good.status(), IsOk());
  EXPECT_THAT(ExplainUniform(**good), IsOk());
  // The certificate names localhost too.
  client::ConnectOptions by_name = Trusting("ca.pem");
  by_name.server_name = "localhost";
  EXPECT_THAT(Info(**Connect(by_name)), IsOk());

  // No CA given: the system's roots do not know the test CA.
  client::ConnectOptions system_roots;
  system_roots.tls = true;
  EXPECT_THAT(Info(**Connect(system_roots)), StatusIs(absl::StatusCode::kUnavailable, _));
  // Another CA.
  EXPECT_THAT(Info(**Connect(Trusting("other-ca.pem"))), StatusIs(absl::StatusCode::kUnavailable, _));
  // A name the certificate does not carry.
  client::ConnectOptions wrong_name = Trusting("ca.pem");
  wrong_name.server_name = "attnroll.example";
  EXPECT_THAT(Info(**Connect(wrong_name)), StatusIs(absl::StatusCode::kUnavailable, _));
  // Plaintext against TLS.
  EXPECT_THAT(Info(**Connect({})), StatusIs(absl::StatusCode::kUnavailable, _));
  // None of them reached a reactor.
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_rpcs_total", {{"rpc", "GetServerInfo"}}), 1);
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutACertificateOrWithOneFromAnotherCa) {
  StartServer(TlsConfig(true));
  auto alice = Connect(Trusting("ca.pem", "alice"));
  ASSERT_THAT(alice.status(), IsOk());
  EXPECT_THAT(ExplainUniform(**alice), IsOk());
  EXPECT_THAT(Info(**Connect(Trusting("ca.pem"))), StatusIs(absl::StatusCode::kUnavailable, _));
  EXPECT_THAT(Info(**Connect(Trusting("ca.pem", "mallory"))), StatusIs(absl::StatusCode::kUnavailable, _));
  // A certificate with the key of another one does not even leave the client.
  client::ConnectOptions mixed = Trusting("ca.pem", "alice");
  mixed.key_file = P("bob.key");
  EXPECT_THAT(Info(**Connect(mixed)), StatusIs(absl::StatusCode::kUnavailable, _));
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_rpcs_total"), 1);
  // Certificate callers are counted under a bounded label, not their CN.
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total",
                        {{"client", "certificate"}, {"code", "OK"}}),
            1);
}

TEST_F(TlsTest, TheClientCertificatesCnIsTheIdentityOfItsShare) {
  // Two passes in flight, half for one client: alice may hold one, and bob
  // (another CN, same address) one more.
  runtime::ServerConfig c = TlsConfig(true);
  c.max_passes_in_flight = 2;
  c.client_share = 0.5;
  c.admission_wait_seconds = 0.05;
  StartServer(c);
  auto alice = Connect(Trusting("ca.pem", "alice"));
  auto alice2 = Connect(Trusting("ca.pem", "alice"));
  auto bob = Connect(Trusting("ca.pem", "bob"));
  const auto a = UniformAttention(1, 2, 2, 16);
  const auto msgs = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext held;
  v1::ExplainResponse unused;
  auto writer = (*alice)->stub()->Explain(&held, &unused);
  ASSERT_TRUE(writer->Write(msgs[0]));
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (server_->passes_in_flight() < 1 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(server_->passes_in_flight(), 1);
  EXPECT_THAT((*alice2)->Explain(testing::RolloutHeader(a), ViewOf(a), {}),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("client_share: client cn:alice holds 1 passes")));
  EXPECT_THAT(ExplainUniform(**bob), IsOk());
  held.TryCancel();
  writer->Finish();
}

TEST_F(TlsTest, ACertificateRotatesWithoutARestart) {
  // The server's files live in a directory of their own, checked every second.
  runtime::ServerConfig c = TlsConfig(false);
  const std::string cert = P("rotating.pem"), key = P("rotating.key");
  TestCerts::Replace(cert, TestCerts::Read(P("server.pem")));
  TestCerts::Replace(key, TestCerts::Read(P("server.key")));
  c.security.tls_cert = cert;
  c.security.tls_key = key;
  c.security.tls_reload_seconds = 1;
  StartServer(c);
  auto before = Connect(Trusting("ca.pem"));
  ASSERT_THAT(Info(**before), IsOk());
  EXPECT_THAT(Info(**Connect(Trusting("other-ca.pem"))), StatusIs(absl::StatusCode::kUnavailable, _));

  // The new certificate is from the other CA: only clients trusting it can
  // connect once it is in use. Key first, then certificate, each renamed in.
  TestCerts::Replace(key, TestCerts::Read(P("server2.key")));
  TestCerts::Replace(cert, TestCerts::Read(P("server2.pem")));
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  absl::Status seen;
  do {
    absl::SleepFor(absl::Milliseconds(200));
    seen = Info(**Connect(Trusting("other-ca.pem")));
  } while (!seen.ok() && absl::Now() < deadline);
  ASSERT_THAT(seen, IsOk()) << "the rotated certificate was not served within 15 s";
  EXPECT_THAT(ExplainUniform(**Connect(Trusting("other-ca.pem"))), IsOk());
  EXPECT_THAT(Info(**Connect(Trusting("ca.pem"))), StatusIs(absl::StatusCode::kUnavailable, _));
  // A connection made before the rotation keeps working.
  EXPECT_THAT(ExplainUniform(**before), IsOk());

  // Files that do not load (a truncated certificate): new connections still
  // get the certificate last loaded.
  TestCerts::Replace(cert, "-----BEGIN CERTIFICATE-----\nMIIB\n");
  absl::SleepFor(absl::Milliseconds(2500));
  server_->Reload();
  EXPECT_THAT(Info(**Connect(Trusting("other-ca.pem"))), IsOk());
}

TEST_F(TlsTest, FilesThatAreWrongStopTheStartNamingTheirFlag) {
  struct Bad {
    std::string cert, key, ca;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {P("missing.pem"), P("server.key"), "",
       absl::StrCat("--tls-cert ", P("missing.pem"), ": cannot read: No such file or directory")},
      {P("server.key"), P("server.key"), "",
       absl::StrCat("--tls-cert ", P("server.key"),
                    ": no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\")")},
      {P("server.pem"), P("server.pem"), "",
       absl::StrCat("--tls-key ", P("server.pem"),
                    ": no PEM private key in it (expected \"-----BEGIN PRIVATE KEY-----\"; "
                    "encrypted keys are not supported)")},
      {P("server.pem"), P("server2.key"), "",
       absl::StrCat("--tls-key ", P("server2.key"), ": not the private key of the certificate in "
                    "--tls-cert ", P("server.pem"))},
      {P("server.pem"), P("server.key"), P("ca.key"),
       absl::StrCat("--tls-client-ca ", P("ca.key"),
                    ": no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\")")},
  };
  for (const Bad& b : cases) {
    runtime::ServerConfig c = Config();
    c.security.tls_cert = b.cert;
    c.security.tls_key = b.key;
    c.security.tls_client_ca = b.ca;
    EXPECT_THAT(Server::Start(c).status(), StatusIs(absl::StatusCode::kInvalidArgument, b.message));
  }
  // The metrics port's files, by their own flags.
  runtime::ServerConfig c = Config();
  c.metrics_listen = "127.0.0.1:0";
  c.security.metrics_tls_cert = P("server.pem");
  c.security.metrics_tls_key = P("alice.key");
  EXPECT_THAT(Server::Start(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("--metrics-tls-key ", P("alice.key"),
                                    ": not the private key of the certificate in --metrics-tls-cert ",
                                    P("server.pem"))));
}

}  // namespace
}  // namespace attnroll::rpc
