// The credentials the gRPC listen addresses are served with.
//   - TLS (--tls-cert, --tls-key): gRPC's TlsServerCredentials over a
//     FileWatcherCertificateProvider; with --tls-client-ca, mutual TLS (a
//     client certificate signed by one of its CAs is required and verified).
//     gRPC's watcher does not check what it reads (a truncated certificate,
//     a key of another certificate, a file missing for a moment all break
//     every new handshake until the next read), so it does not read the
//     operator's files: it reads GrpcTlsFiles, memory files holding the last
//     set that loaded (rpc/tls_files.h), the key and certificate chain in
//     one file so that one read gives a matching pair.
//   - Without TLS and with a token file: plaintext through gRPC's local
//     credentials (loopback connections only, which ValidateConfig
//     guarantees), so that the token check can run before reflection;
//     insecure credentials cannot carry an AuthMetadataProcessor.
//   - Otherwise plaintext (insecure credentials).
#ifndef ATTNROLL_SERVER_RPC_CREDENTIALS_H_
#define ATTNROLL_SERVER_RPC_CREDENTIALS_H_

#include <memory>
#include <string>

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/rpc/memory_file.h"
#include "server/rpc/tls_files.h"
#include "server/runtime/config.h"

namespace attnroll::rpc {

// How often gRPC's watcher reads the memory files: a published set is in
// use for new connections within this.
inline constexpr unsigned int kGrpcTlsRefreshSeconds = 1;

class GrpcTlsFiles {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcTlsFiles>> Create(const TlsMaterial& material);

  // Hands gRPC a newly loaded set. gRPC's watcher compares modification
  // times in whole seconds to notice a file replaced while it reads, so
  // publications are kept more than a second apart (this may wait).
  absl::Status Publish(const TlsMaterial& material);

  const std::string& identity_path() const { return identity_->path(); }
  std::string ca_path() const { return ca_ != nullptr ? ca_->path() : ""; }

 private:
  GrpcTlsFiles() = default;
  std::unique_ptr<MemoryFile> identity_;  // key, then certificate chain
  std::unique_ptr<MemoryFile> ca_;        // null without client CAs
  absl::Time published_;
};

// `tls` (null without TLS) and `processor` (may be null; runs before every
// call's handler) must outlive the server.
std::shared_ptr<grpc::ServerCredentials> ListenCredentials(
    const GrpcTlsFiles* tls, std::shared_ptr<grpc::AuthMetadataProcessor> processor);

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_CREDENTIALS_H_
