#include "server/rpc/security_log.h"

#include <sys/stat.h>

#include <cstdio>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/runtime/logging.h"
#include "tests/testutil/test_certs.h"

namespace attnroll::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::TestCerts;

// The lines LogSecurity writes for `config` (and the parts given).
std::string Logged(const runtime::ServerConfig& config, const WatchedTlsFiles* tls = nullptr,
                   const runtime::TokenStore* tokens = nullptr) {
  std::FILE* out = std::tmpfile();
  runtime::Logger logger(runtime::LogLevel::kInfo, 1000, out);
  runtime::SetLogger(&logger);
  LogSecurity(config, tls, tokens, nullptr);
  runtime::SetLogger(nullptr);
  std::rewind(out);
  std::string lines;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), out)) > 0) lines.append(buffer, n);
  std::fclose(out);
  return lines;
}

// Nothing listens here: LogSecurity only reads the configuration, so the
// non-loopback addresses are never bound.
TEST(SecurityLogTest, EveryOpenNonLoopbackAddressIsWarnedAboutOnce) {
  runtime::ServerConfig c;
  c.listen = {"127.0.0.1:0", "0.0.0.0:50051", "[::]:7"};
  const std::string lines = Logged(c);
  EXPECT_THAT(lines, HasSubstr(" WARNING open to the network: listen=0.0.0.0:50051 tls=off message=\"no TLS "
                               "and no --token-file: anyone who can reach this address can call every RPC "
                               "and read the attention it carries\"\n"));
  EXPECT_THAT(lines, HasSubstr(" WARNING open to the network: listen=[::]:7 tls=off "));
  EXPECT_THAT(lines, Not(HasSubstr("listen=127.0.0.1:0")));
  size_t warnings = 0;
  for (size_t at = lines.find("open to the network"); at != std::string::npos;
       at = lines.find("open to the network", at + 1)) {
    ++warnings;
  }
  EXPECT_EQ(warnings, 2u) << lines;

  // TLS alone: still anyone may call.
  c.security.tls_cert = "/c";
  c.security.tls_key = "/k";
  EXPECT_THAT(Logged(c), HasSubstr(" WARNING open to the network: listen=0.0.0.0:50051 tls=on message=\"no "
                                   "--token-file or --tls-client-ca: anyone who can reach this address can "
                                   "call every RPC\"\n"));
  // Mutual TLS authenticates callers: no warning.
  c.security.tls_client_ca = "/ca";
  EXPECT_THAT(Logged(c), Not(HasSubstr("open to the network")));
  // Loopback only (the default): no warning.
  EXPECT_THAT(Logged(runtime::ServerConfig{}), Not(HasSubstr("open to the network")));
}

TEST(SecurityLogTest, TokensAndTheCertificateAreDescribedAndAReadableTokenFileIsWarnedAbout) {
  TestCerts certs;
  ASSERT_TRUE(certs.ok()) << certs.error();
  const std::string token_file = certs.Path("tokens");
  TestCerts::Replace(token_file, "alice aaaaaaaaaaaaaaaaaaaaaaaa\nbob bbbbbbbbbbbbbbbbbbbbbbbb\n");
  ASSERT_EQ(chmod(token_file.c_str(), 0644), 0);
  auto tokens = runtime::TokenStore::Open(token_file);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  auto tls = WatchedTlsFiles::Open({certs.Path("server.pem"), certs.Path("server.key"), certs.Path("ca.pem"),
                                    "--tls-cert", "--tls-key", "--tls-client-ca"});
  ASSERT_TRUE(tls.ok()) << tls.status();
  runtime::ServerConfig c;
  c.listen = {"0.0.0.0:50051"};
  c.security.tls_cert = certs.Path("server.pem");
  c.security.tls_key = certs.Path("server.key");
  c.security.tls_client_ca = certs.Path("ca.pem");
  c.security.token_file = token_file;
  c.security.info_requires_auth = true;
  const std::string lines = Logged(c, tls->get(), tokens->get());
  EXPECT_THAT(lines, HasSubstr(" INFO tls: gRPC port: certificate=\"CN=localhost, issuer CN=attnroll test CA, "
                               "not after "));
  EXPECT_THAT(lines, HasSubstr("client_certificates=required reload_seconds=10\n"));
  EXPECT_THAT(lines, HasSubstr(" INFO tokens loaded: file=" + token_file +
                               " tokens=2 names=alice,bob info_requires_auth=true\n"));
  EXPECT_THAT(lines, HasSubstr(" WARNING tokens: the token file is readable by other users: file=" + token_file +
                               " mode=0644\n"));
  EXPECT_THAT(lines, Not(HasSubstr("aaaaaaaaaaaaaaaaaaaaaaaa")));
  EXPECT_THAT(lines, Not(HasSubstr("open to the network")));

  ASSERT_EQ(chmod(token_file.c_str(), 0600), 0);
  EXPECT_THAT(Logged(c, tls->get(), tokens->get()), Not(HasSubstr("readable by other users")));
}

}  // namespace
}  // namespace attnroll::rpc
