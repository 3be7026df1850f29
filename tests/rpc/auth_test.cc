// Bearer tokens: without a valid "authorization: Bearer <token>" every RPC
// but health is refused UNAUTHENTICATED with a message naming the metadata
// key and never the token; GetServerInfo and reflection are open unless
// --info-requires-auth; the token's name is the identity admission shares,
// logs and the metrics label use (two tokens from one address get two
// shares); the token file is re-read when it changes and a bad one keeps the
// tokens in use; a malformed file stops the start naming its line.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/runtime/logging.h"
#include "tests/testutil/metrics_testutil.h"
#include "tests/testutil/raw_call.h"
#include "tests/testutil/server_fixture.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_certs.h"

namespace attnroll::rpc {
namespace {

using ::testing::_;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pointwise;
using testing::IsOk;
using testing::MetricValue;
using testing::StatusIs;
using testing::UniformAttention;
using testing::UniformRollout;
using testing::ViewOf;

constexpr char kAlice[] = "alice-7f3c9a1e5b2d4086";
constexpr char kBob[] = "bob-0c4e8a2f6b1d5e93";
constexpr char kMissing[] =
    "authentication: metadata \"authorization\": missing: expected \"Bearer <token>\" with a token "
    "of the server's token file";
constexpr char kNotValid[] =
    "authentication: metadata \"authorization\": the bearer token is not one of the server's tokens";
constexpr char kService[] = "/attnroll.v1.AttnrollService/";
constexpr char kReflection[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
// A ServerReflectionRequest with list_services = "" (field 7).
const std::string kListServices("\x3a\x00", 2);

class AuthTest : public testing::ServerTest {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/attnroll_auth_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    tokens_ = dir_ + "/tokens";
    WriteTokens(absl::StrCat("# test tokens\nalice ", kAlice, "\nbob ", kBob, "\n"));
    StartServer(TokenConfig());
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    std::remove(tokens_.c_str());
    rmdir(dir_.c_str());
  }
  void WriteTokens(const std::string& text) { testing::TestCerts::Replace(tokens_, text); }
  runtime::ServerConfig TokenConfig() const {
    runtime::ServerConfig c = Config();
    c.security.token_file = tokens_;
    return c;
  }
  std::string Target(int i = 0) const {
    return absl::StrCat(i == 0 ? "127.0.0.1:" : "[::1]:", server_->ports()[i]);
  }
  std::shared_ptr<grpc::Channel> Channel(const std::string& token, int i = 0) {
    client::ConnectOptions o;
    o.token = token;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return *client::OpenChannel(Target(i), o, args);
  }
  std::unique_ptr<client::Client> As(const std::string& token, int i = 0) {
    return std::make_unique<client::Client>(Channel(token, i));
  }
  static absl::Status ExplainUniform(client::Client& c) {
    const auto a = UniformAttention(1, 3, 2, 16);
    absl::StatusOr<v1::ExplainResponse> r = c.Explain(testing::RolloutHeader(a), ViewOf(a), {});
    if (!r.ok()) return r.status();
    EXPECT_THAT(testing::MapValues(r->results(0).maps(0)),
                Pointwise(FloatNear(1e-6), UniformRollout(16, 3, 0)));
    return absl::OkStatus();
  }
  static absl::Status Status(const grpc::Status& s) { return client::FromGrpcStatus(s); }
  // Compare with hand-set metadata (no interceptor).
  absl::Status CompareWith(const std::vector<std::pair<std::string, std::string>>& metadata) {
    grpc::ClientContext ctx;
    for (const auto& [k, v] : metadata) ctx.AddMetadata(k, v);
    v1::CompareResponse response;
    return Status(client_->stub()->Compare(&ctx, v1::CompareRequest(), &response));
  }
  grpc::Status Health(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status s = stub->Check(&ctx, req, &resp);
    if (s.ok()) {
      EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    }
    return s;
  }
  // Reflection's list of services, or the call's status.
  grpc::Status ListServices(const std::shared_ptr<grpc::Channel>& channel, std::string* services) {
    std::vector<std::string> responses;
    grpc::Status s = testing::RawCall(channel, kReflection, {kListServices}, absl::Seconds(10), &responses);
    for (const std::string& r : responses) *services += r;
    return s;
  }

  std::string dir_, tokens_;
};

TEST_F(AuthTest, EveryRpcButHealthAndInfoNeedsAValidTokenAndTheMessageNeverEchoesIt) {
  // No token: each method of the service (all the proto declares, so a
  // method added later is covered) is refused by name of the key.
  const auto anonymous = Channel("");
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName("attnroll.v1.AttnrollService");
  ASSERT_NE(service, nullptr);
  int methods = 0;
  // (One empty message each: a unary handler runs once its request is in.)
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string method = service->method(i)->name();
    if (method == "GetServerInfo") continue;  // open without --info-requires-auth (below)
    ++methods;
    EXPECT_THAT(Status(testing::RawCall(anonymous, absl::StrCat(kService, method), {""})),
                StatusIs(absl::StatusCode::kUnauthenticated, kMissing))
        << method;
  }
  EXPECT_GE(methods, 9);  // Explain, ExplainStream, Compare, ExplainPair, Audit, the four of monitoring
  // An unknown method learns nothing either.
  EXPECT_THAT(Status(testing::RawCall(anonymous, "/attnroll.v1.Secret/Method", {""})),
              StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  // Through the client library too.
  const auto a = UniformAttention(1, 3, 2, 16);
  EXPECT_THAT(client_->Explain(testing::RolloutHeader(a), ViewOf(a), {}),
              StatusIs(absl::StatusCode::kUnauthenticated, kMissing));

  // A wrong token; a token without the scheme; two values; an empty one.
  const std::string guess = "alice-7f3c9a1e5b2d4087";
  absl::Status wrong = ExplainUniform(*As(guess));
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kUnauthenticated, kNotValid));
  EXPECT_THAT(std::string(wrong.message()), Not(HasSubstr(guess)));
  absl::Status bare = CompareWith({{"authorization", kAlice}});
  EXPECT_THAT(bare, StatusIs(absl::StatusCode::kUnauthenticated,
                             "authentication: metadata \"authorization\": expected \"Bearer <token>\", "
                             "got a value without the Bearer scheme"));
  EXPECT_THAT(std::string(bare.message()), Not(HasSubstr(kAlice)));
  EXPECT_THAT(CompareWith({{"authorization", absl::StrCat("Bearer ", kAlice)},
                           {"authorization", absl::StrCat("Bearer ", kBob)}}),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "authentication: metadata \"authorization\": expected one value, got 2"));
  EXPECT_THAT(CompareWith({{"authorization", "Bearer"}}),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "authentication: metadata \"authorization\": expected \"Bearer <token>\", got no "
                       "token after Bearer"));
  // The scheme is case-insensitive; an empty Compare then fails on its content.
  EXPECT_THAT(CompareWith({{"authorization", absl::StrCat("bearer ", kAlice)}}),
              StatusIs(absl::StatusCode::kInvalidArgument, _));

  // Health, GetServerInfo and reflection stay open without a token.
  EXPECT_THAT(Status(Health(anonymous)), IsOk());
  EXPECT_THAT(client_->GetServerInfo().status(), IsOk());
  std::string services;
  EXPECT_THAT(Status(ListServices(anonymous, &services)), IsOk());
  EXPECT_THAT(services, HasSubstr("attnroll.v1.AttnrollService"));

  // With the token, the right map.
  EXPECT_THAT(ExplainUniform(*As(kAlice)), IsOk());

  // Refusals are counted by reason and under the anonymous label; the
  // caller with a token under its name.
  const double refused = methods + 1 + 1 + 1 + 3;  // raw calls, unknown, library, wrong, Compare x3
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_refusals_total", {{"reason", "auth"}}), refused);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total",
                        {{"client", "anonymous"}, {"code", "UNAUTHENTICATED"}}),
            refused);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total", {{"client", "alice"}, {"code", "OK"}}), 1);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total",
                        {{"client", "alice"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_rpcs_total", {{"rpc", "unknown"}}), 1);
  ExpectMemoryReleased();
}

TEST_F(AuthTest, InfoRequiresAuthClosesGetServerInfoAndReflectionButNotHealth) {
  runtime::ServerConfig c = TokenConfig();
  c.security.info_requires_auth = true;
  StartServer(c);
  const auto anonymous = Channel("");
  EXPECT_THAT(client_->GetServerInfo().status(), StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  std::string services;
  EXPECT_THAT(Status(ListServices(anonymous, &services)),
              StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  EXPECT_EQ(services, "");
  EXPECT_THAT(Status(ListServices(Channel("not-a-token-of-this-server"), &services)),
              StatusIs(absl::StatusCode::kUnauthenticated, kNotValid));
  EXPECT_EQ(services, "");
  EXPECT_THAT(Status(Health(anonymous)), IsOk());

  absl::StatusOr<v1::ServerInfo> info = As(kBob)->GetServerInfo();
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->limits().max_tokens(), 1024);
  EXPECT_THAT(Status(ListServices(Channel(kBob), &services)), IsOk());
  EXPECT_THAT(services, HasSubstr("attnroll.v1.AttnrollService"));
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_rpcs_total",
                        {{"rpc", "ServerReflectionInfo"}, {"code", "UNAUTHENTICATED"}}),
            2);
}

TEST_F(AuthTest, TwoTokensFromOneAddressGetTwoSharesAndTheLogNamesThem) {
  // Room for two passes, half for one client. Alice holds one; her second
  // is over her share, Bob's (same address) is not.
  std::FILE* log = std::tmpfile();
  runtime::Logger logger(runtime::LogLevel::kInfo, 1000, log);
  runtime::SetLogger(&logger);
  struct Restore {
    ~Restore() { runtime::SetLogger(nullptr); }
  } restore;
  runtime::ServerConfig c = TokenConfig();
  c.max_passes_in_flight = 2;
  c.client_share = 0.5;
  c.admission_wait_seconds = 0.05;
  StartServer(c);
  auto alice = As(kAlice);
  const auto a = UniformAttention(1, 2, 2, 16);
  const auto msgs = Pass(a, testing::RolloutHeader(a));
  grpc::ClientContext held;
  v1::ExplainResponse unused;
  auto writer = alice->stub()->Explain(&held, &unused);
  ASSERT_TRUE(writer->Write(msgs[0]));
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (server_->passes_in_flight() < 1 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_EQ(server_->passes_in_flight(), 1);
  EXPECT_THAT(As(kAlice)->Explain(testing::RolloutHeader(a), ViewOf(a), {}),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("client_share: client alice holds 1 passes")));
  EXPECT_THAT(ExplainUniform(*As(kBob)), IsOk());
  held.TryCancel();
  writer->Finish();
  server_.reset();
  runtime::SetLogger(nullptr);

  std::rewind(log);
  std::string lines;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), log)) > 0) lines.append(buffer, n);
  std::fclose(log);
  EXPECT_THAT(lines, HasSubstr("refused: rpc=Explain request_id=test client=alice status=RESOURCE_EXHAUSTED "
                               "reason=client_share"));
  EXPECT_THAT(lines, HasSubstr("tokens loaded: file="));
  EXPECT_THAT(lines, HasSubstr("tokens=2 names=alice,bob"));
  EXPECT_THAT(lines, Not(HasSubstr(kAlice)));
  EXPECT_THAT(lines, Not(HasSubstr(kBob)));

  // Without tokens the same two callers are one client: the address.
  runtime::ServerConfig plain = Config();
  plain.max_passes_in_flight = 2;
  plain.client_share = 0.5;
  plain.admission_wait_seconds = 0.05;
  StartServer(plain);
  auto first = As("");
  grpc::ClientContext held2;
  auto writer2 = first->stub()->Explain(&held2, &unused);
  ASSERT_TRUE(writer2->Write(msgs[0]));
  const absl::Time until2 = absl::Now() + absl::Seconds(5);
  while (server_->passes_in_flight() < 1 && absl::Now() < until2) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_THAT(As("")->Explain(testing::RolloutHeader(a), ViewOf(a), {}),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("client_share: client ipv4:127.0.0.1 holds 1 passes")));
  held2.TryCancel();
  writer2->Finish();
}

TEST_F(AuthTest, TheTokenFileIsReReadWhenItChangesAndABadOneKeepsTheTokens) {
  runtime::ServerConfig c = TokenConfig();
  c.listen = {"127.0.0.1:0", "[::1]:0"};  // plaintext tokens on both loopbacks
  c.security.tls_reload_seconds = 1;
  auto started = Server::Start(c);
  if (!started.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << started.status();
  server_ = std::move(*started);
  EXPECT_THAT(ExplainUniform(*As(kAlice, 1)), IsOk());
  const std::string carol = "carol-5b7d9f1a3c6e8024";
  EXPECT_THAT(ExplainUniform(*As(carol)), StatusIs(absl::StatusCode::kUnauthenticated, kNotValid));

  // Carol in, Alice out: in use within the check interval, without a call.
  WriteTokens(absl::StrCat("bob ", kBob, "\ncarol ", carol, "\n"));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::Status seen;
  do {
    absl::SleepFor(absl::Milliseconds(100));
    seen = ExplainUniform(*As(carol));
  } while (!seen.ok() && absl::Now() < deadline);
  EXPECT_THAT(seen, IsOk());
  EXPECT_THAT(ExplainUniform(*As(kAlice)), StatusIs(absl::StatusCode::kUnauthenticated, kNotValid));
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total", {{"client", "carol"}, {"code", "OK"}}), 1);

  // A malformed file: the tokens in use stay.
  WriteTokens(absl::StrCat("alice ", kAlice, "\ncarol\n"));
  server_->Reload();
  EXPECT_THAT(ExplainUniform(*As(carol)), IsOk());
  EXPECT_THAT(ExplainUniform(*As(kAlice)), StatusIs(absl::StatusCode::kUnauthenticated, kNotValid));
  // Fixed, and read at once on Reload (SIGHUP's path).
  WriteTokens(absl::StrCat("alice ", kAlice, "\n"));
  server_->Reload();
  EXPECT_THAT(ExplainUniform(*As(kAlice, 1)), IsOk());
  EXPECT_THAT(ExplainUniform(*As(carol)), StatusIs(absl::StatusCode::kUnauthenticated, kNotValid));
}

TEST_F(AuthTest, AMalformedTokenFileStopsTheStartNamingItsLine) {
  WriteTokens(absl::StrCat("alice ", kAlice, "\n\nbob ", kBob, " extra\n"));
  EXPECT_THAT(Server::Start(TokenConfig()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("--token-file ", tokens_, ": line 3: expected \"NAME TOKEN\", got 3 fields")));
  runtime::ServerConfig c = TokenConfig();
  c.security.token_file = dir_ + "/none";
  EXPECT_THAT(Server::Start(c).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat("--token-file ", dir_, "/none: cannot read: No such file or directory")));
}

TEST_F(AuthTest, OverMutualTlsTheTokensNameIsTheIdentity) {
  testing::TestCerts certs;
  ASSERT_TRUE(certs.ok()) << certs.error();
  runtime::ServerConfig c = TokenConfig();
  c.security.tls_cert = certs.Path("server.pem");
  c.security.tls_key = certs.Path("server.key");
  c.security.tls_client_ca = certs.Path("ca.pem");
  c.security.info_requires_auth = true;
  StartServer(c);
  client::ConnectOptions o;
  o.ca_file = certs.Path("ca.pem");
  o.cert_file = certs.Path("alice.pem");  // the certificate says alice ...
  o.key_file = certs.Path("alice.key");
  auto no_token = client::Client::Connect(Target(), o);
  EXPECT_THAT((*no_token)->GetServerInfo().status(), StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  std::string services;
  EXPECT_THAT(Status(ListServices(*client::OpenChannel(Target(), o), &services)),
              StatusIs(absl::StatusCode::kUnauthenticated, kMissing));
  EXPECT_THAT(Status(Health(*client::OpenChannel(Target(), o))), IsOk());
  o.token = kBob;  // ... the token says bob
  auto bob = client::Client::Connect(Target(), o);
  EXPECT_THAT(ExplainUniform(**bob), IsOk());
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total", {{"client", "bob"}, {"code", "OK"}}), 1);
  // Without a token it was the certificate's caller that was refused.
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total", {{"client", "certificate"}, {"code", "OK"}}), 0);
  EXPECT_EQ(MetricValue(server_->metrics(), "attnroll_client_rpcs_total",
                        {{"client", "certificate"}, {"code", "UNAUTHENTICATED"}}),
            2);
}

}  // namespace
}  // namespace attnroll::rpc
