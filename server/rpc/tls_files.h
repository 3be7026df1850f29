// The PEM files of a TLS endpoint (a certificate chain, its private key, an
// optional CA bundle for client certificates), read and checked with
// OpenSSL: at start, so a wrong file stops the server with a message naming
// its flag, and again whenever the files change (rotation without restart).
#ifndef ATTNROLL_SERVER_RPC_TLS_FILES_H_
#define ATTNROLL_SERVER_RPC_TLS_FILES_H_

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace attnroll::rpc {

// Paths and the flags that named them (for messages).
struct TlsFiles {
  std::string cert, key, client_ca;        // client_ca may be empty
  std::string cert_flag, key_flag, ca_flag;  // "--tls-cert", ...
};

// One consistent set of parsed files.
class TlsMaterial {
 public:
  using Digest = std::array<uint8_t, 32>;

  // Reads and checks the files: the certificate file holds at least one
  // certificate (the first is the endpoint's, the rest its chain), the key
  // file a private key that is the first certificate's, the CA file (when
  // set) at least one certificate. INVALID_ARGUMENT naming the flag and the
  // path otherwise.
  static absl::StatusOr<std::shared_ptr<const TlsMaterial>> Load(const TlsFiles& files);
  ~TlsMaterial();
  TlsMaterial(const TlsMaterial&) = delete;
  TlsMaterial& operator=(const TlsMaterial&) = delete;

  X509* leaf() const { return leaf_; }
  STACK_OF(X509)* chain() const { return chain_; }   // may be empty
  EVP_PKEY* key() const { return key_; }
  X509_STORE* client_cas() const { return cas_; }    // null without a CA file
  // "CN=attnroll.example, issuer CN=Example CA, not after
  // 2027-01-01T00:00:00Z": for the log.
  std::string Describe() const;
  // True when the certificate's validity period does not include now.
  bool ExpiredOrNotYetValid() const;
  // SHA-256 over the three files' bytes as read.
  const Digest& digest() const { return digest_; }
  // The files' texts as read and checked (the CA's empty without one).
  const std::string& cert_pem() const { return cert_pem_; }
  const std::string& key_pem() const { return key_pem_; }
  const std::string& ca_pem() const { return ca_pem_; }

 private:
  TlsMaterial() = default;
  std::string cert_pem_, key_pem_, ca_pem_;
  X509* leaf_ = nullptr;
  STACK_OF(X509)* chain_ = nullptr;
  EVP_PKEY* key_ = nullptr;
  X509_STORE* cas_ = nullptr;
  Digest digest_{};
};


// The files an endpoint runs with, re-read when they change; a set that does
// not load on reload keeps the one in use (and says why, once per version).
class WatchedTlsFiles {
 public:
  static absl::StatusOr<std::unique_ptr<WatchedTlsFiles>> Open(TlsFiles files);

  std::shared_ptr<const TlsMaterial> current() const;
  const TlsFiles& files() const { return files_; }

  enum class Reload { kUnchanged, kReloaded, kFailed };
  Reload ReloadIfChanged(std::string* error);

 private:
  explicit WatchedTlsFiles(TlsFiles files) : files_(std::move(files)) {}
  const TlsFiles files_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TlsMaterial> current_ ABSL_GUARDED_BY(mu_);
  TlsMaterial::Digest tried_ ABSL_GUARDED_BY(mu_){};
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_TLS_FILES_H_
