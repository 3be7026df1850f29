// The /metrics endpoint: prometheus-cpp's Exposer (civetweb: its own
// threads, a request timeout, no keep-alive), over HTTPS when
// --metrics-tls-cert is set, with client certificates required and verified
// when --metrics-tls-client-ca is.
//
// TLS is ours, not civetweb's option parsing: civetweb's `ssl_certificate`
// wants the key and the certificate in one file and reads it once at start.
// Instead the endpoint hands civetweb a finished SSL_CTX (its
// external_ssl_ctx callback) whose certificate callback takes the
// certificate, key and client CAs of the files currently loaded, for every
// handshake; ReloadIfChanged swaps them when the files change, so a rotation
// needs no restart.
//
// Debian's libcivetweb1 is built with TLS loaded at run time: it dlopen()s
// "libssl.so" and "libcrypto.so". The first is answered by a compatibility
// library (rpc/civetweb_openssl3.cc: civetweb 1.15 as Debian builds it
// crashes on every HTTPS request with OpenSSL 3 otherwise); the second is a
// name only libssl-dev installs (the runtime package has libcrypto.so.3).
// Start checks both and says what is missing.
#ifndef ATTNROLL_SERVER_RPC_METRICS_ENDPOINT_H_
#define ATTNROLL_SERVER_RPC_METRICS_ENDPOINT_H_

#include <openssl/ssl.h>

#include <memory>

#include <prometheus/exposer.h>

#include "absl/status/statusor.h"
#include "server/rpc/tls_files.h"
#include "server/runtime/config.h"
#include "server/runtime/metrics.h"

namespace attnroll::rpc {

class MetricsEndpoint {
 public:
  // Listens on config.metrics_listen (not empty). INVALID_ARGUMENT for
  // TLS files that do not load (naming the flag) or libssl.so missing,
  // UNAVAILABLE when the address cannot be listened on.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const runtime::ServerConfig& config,
                                                               runtime::Metrics* metrics);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return port_; }
  bool tls() const { return tls_ != nullptr; }
  // Re-reads the TLS files when they changed; logs what happened.
  void ReloadIfChanged();

 private:
  MetricsEndpoint() = default;
  static int CertCallback(SSL* ssl, void* self);

  std::unique_ptr<WatchedTlsFiles> tls_;
  SSL_CTX* ssl_ctx_ = nullptr;  // ours; civetweb holds its own reference
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_METRICS_ENDPOINT_H_
