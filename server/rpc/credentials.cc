#include "server/rpc/credentials.h"

#include <grpc/grpc_security_constants.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace attnroll::rpc {
namespace {

std::string Identity(const TlsMaterial& m) { return absl::StrCat(m.key_pem(), "\n", m.cert_pem()); }

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcTlsFiles>> GrpcTlsFiles::Create(const TlsMaterial& m) {
  std::unique_ptr<GrpcTlsFiles> f(new GrpcTlsFiles());
  absl::StatusOr<std::unique_ptr<MemoryFile>> identity = MemoryFile::Create("attnroll-tls-identity", Identity(m));
  if (!identity.ok()) return identity.status();
  f->identity_ = *std::move(identity);
  if (m.client_cas() != nullptr) {
    absl::StatusOr<std::unique_ptr<MemoryFile>> ca = MemoryFile::Create("attnroll-tls-client-ca", m.ca_pem());
    if (!ca.ok()) return ca.status();
    f->ca_ = *std::move(ca);
  }
  f->published_ = absl::Now();
  return f;
}

absl::Status GrpcTlsFiles::Publish(const TlsMaterial& m) {
  const absl::Time earliest = published_ + absl::Milliseconds(1100);
  if (absl::Now() < earliest) absl::SleepFor(earliest - absl::Now());
  if (absl::Status s = identity_->Replace(Identity(m)); !s.ok()) return s;
  if (ca_ != nullptr) {
    if (absl::Status s = ca_->Replace(m.ca_pem()); !s.ok()) return s;
  }
  published_ = absl::Now();
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> ListenCredentials(
    const GrpcTlsFiles* tls, std::shared_ptr<grpc::AuthMetadataProcessor> processor) {
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (tls != nullptr) {
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        tls->identity_path(), tls->identity_path(), tls->ca_path(), kGrpcTlsRefreshSeconds);
    grpc::experimental::TlsServerCredentialsOptions options(provider);
    options.watch_identity_key_cert_pairs();
    if (!tls->ca_path().empty()) {
      options.watch_root_certs();
      options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    } else {
      options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    }
    creds = grpc::experimental::TlsServerCredentials(options);
  } else if (processor != nullptr) {
    creds = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  } else {
    return grpc::InsecureServerCredentials();
  }
  if (processor != nullptr) creds->SetAuthMetadataProcessor(std::move(processor));
  return creds;
}

}  // namespace attnroll::rpc
