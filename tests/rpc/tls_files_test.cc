// The PEM files of a TLS endpoint: what loads, what is refused (naming the
// flag and the file), and a reload that takes a new set and keeps the one in
// use when the new files do not load.
#include "server/rpc/tls_files.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/testutil/status_matchers.h"
#include "tests/testutil/test_certs.h"

namespace attnroll::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using testing::IsOk;
using testing::StatusIs;
using testing::TestCerts;

class TlsFilesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = new TestCerts(); }
  static void TearDownTestSuite() { delete certs_; }
  void SetUp() override { ASSERT_TRUE(certs_->ok()) << certs_->error(); }
  static std::string P(const std::string& name) { return certs_->Path(name); }
  static TlsFiles Files(const std::string& cert, const std::string& key, const std::string& ca = "") {
    return {cert, key, ca, "--tls-cert", "--tls-key", "--tls-client-ca"};
  }
  static TestCerts* certs_;
};
TestCerts* TlsFilesTest::certs_ = nullptr;

TEST_F(TlsFilesTest, ACertificateItsKeyAndACaBundleLoad) {
  absl::StatusOr<std::shared_ptr<const TlsMaterial>> m =
      TlsMaterial::Load(Files(P("server.pem"), P("server.key"), P("ca.pem")));
  ASSERT_THAT(m.status(), IsOk());
  EXPECT_NE((*m)->leaf(), nullptr);
  EXPECT_NE((*m)->client_cas(), nullptr);
  EXPECT_EQ(sk_X509_num((*m)->chain()), 0);  // the file holds the leaf only
  EXPECT_THAT((*m)->Describe(),
              MatchesRegex("CN=localhost, issuer CN=attnroll test CA, not after "
                           "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"));
  EXPECT_FALSE((*m)->ExpiredOrNotYetValid());
  EXPECT_EQ((*m)->cert_pem(), TestCerts::Read(P("server.pem")));
  // A chain: the leaf first, then what signed it.
  const std::string chain = P("chain.pem");
  TestCerts::Replace(chain, TestCerts::Read(P("server.pem")) + TestCerts::Read(P("ca.pem")));
  m = TlsMaterial::Load(Files(chain, P("server.key")));
  ASSERT_THAT(m.status(), IsOk());
  EXPECT_EQ(sk_X509_num((*m)->chain()), 1);
  EXPECT_EQ((*m)->client_cas(), nullptr);
}

TEST_F(TlsFilesTest, WhatDoesNotLoadIsRefusedNamingTheFlagAndTheFile) {
  const std::string empty = P("empty.pem");
  TestCerts::Replace(empty, "");
  struct Bad {
    TlsFiles files;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {Files(P("none.pem"), P("server.key")),
       absl::StrCat("--tls-cert ", P("none.pem"), ": cannot read: No such file or directory")},
      {Files(P("server.pem"), P("none.key")),
       absl::StrCat("--tls-key ", P("none.key"), ": cannot read: No such file or directory")},
      {Files(empty, P("server.key")),
       absl::StrCat("--tls-cert ", empty, ": no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\")")},
      {Files(P("server.pem"), P("server.pem")),
       absl::StrCat("--tls-key ", P("server.pem"),
                    ": no PEM private key in it (expected \"-----BEGIN PRIVATE KEY-----\"; encrypted keys "
                    "are not supported)")},
      {Files(P("server.pem"), P("alice.key")),
       absl::StrCat("--tls-key ", P("alice.key"), ": not the private key of the certificate in --tls-cert ",
                    P("server.pem"))},
      {Files(P("server.pem"), P("server.key"), empty),
       absl::StrCat("--tls-client-ca ", empty, ": no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\")")},
  };
  for (const Bad& b : cases) {
    EXPECT_THAT(TlsMaterial::Load(b.files).status(), StatusIs(absl::StatusCode::kInvalidArgument, b.message));
  }
  // An encrypted key is refused, and nothing asks for a passphrase.
  const std::string encrypted = P("encrypted.key");
  int status = 0;
  testing::RunCommand(absl::StrCat("openssl pkey -in ", P("server.key"), " -aes128 -passout pass:x -out ",
                                   encrypted, " 2>&1"),
                      &status);
  ASSERT_EQ(status, 0);
  EXPECT_THAT(TlsMaterial::Load(Files(P("server.pem"), encrypted)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encrypted keys are not supported")));
}

TEST_F(TlsFilesTest, AReloadTakesANewSetAndKeepsTheOldOneWhenTheNewDoesNotLoad) {
  const std::string cert = P("watched.pem"), key = P("watched.key");
  TestCerts::Replace(cert, TestCerts::Read(P("server.pem")));
  TestCerts::Replace(key, TestCerts::Read(P("server.key")));
  absl::StatusOr<std::unique_ptr<WatchedTlsFiles>> w = WatchedTlsFiles::Open(Files(cert, key));
  ASSERT_THAT(w.status(), IsOk());
  std::string error;
  EXPECT_EQ((*w)->ReloadIfChanged(&error), WatchedTlsFiles::Reload::kUnchanged);

  // Half a rotation: the new key with the old certificate. Refused once.
  TestCerts::Replace(key, TestCerts::Read(P("server2.key")));
  EXPECT_EQ((*w)->ReloadIfChanged(&error), WatchedTlsFiles::Reload::kFailed);
  EXPECT_THAT(error, HasSubstr("not the private key of the certificate"));
  EXPECT_EQ((*w)->ReloadIfChanged(&error), WatchedTlsFiles::Reload::kUnchanged);
  EXPECT_THAT((*w)->current()->Describe(), HasSubstr("issuer CN=attnroll test CA"));
  // The other half: the new pair is in use.
  TestCerts::Replace(cert, TestCerts::Read(P("server2.pem")));
  EXPECT_EQ((*w)->ReloadIfChanged(&error), WatchedTlsFiles::Reload::kReloaded);
  EXPECT_THAT((*w)->current()->Describe(), HasSubstr("issuer CN=attnroll other CA"));
  // A file gone: said every time, the pair in use stays.
  std::remove(cert.c_str());
  EXPECT_EQ((*w)->ReloadIfChanged(&error), WatchedTlsFiles::Reload::kFailed);
  EXPECT_THAT(error, HasSubstr("cannot read: No such file or directory"));
  EXPECT_EQ((*w)->ReloadIfChanged(&error), WatchedTlsFiles::Reload::kFailed);
  EXPECT_THAT((*w)->current()->Describe(), HasSubstr("issuer CN=attnroll other CA"));
}

}  // namespace
}  // namespace attnroll::rpc
