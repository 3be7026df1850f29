#include "server/rpc/metrics_endpoint.h"

#include <CivetServer.h>
#include <dlfcn.h>
#include <openssl/err.h>

#include <exception>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/runtime/logging.h"

namespace attnroll::rpc {
namespace {

// civetweb calls external_ssl_ctx with its CivetServer as user data, so the
// context being set up is handed over here, under a lock held for the whole
// construction of one Exposer.
absl::Mutex g_construct_mu;
SSL_CTX* g_pending_ctx = nullptr;  // set only while g_construct_mu is held

// At start (*ssl_ctx null): civetweb takes a reference of ours and leaves
// the context alone. At shutdown (*ssl_ctx set): 0, so civetweb frees the
// reference it took.
int ExternalSslCtx(void** ssl_ctx, void*) {
  if (*ssl_ctx != nullptr) return 0;
  if (g_pending_ctx == nullptr) return -1;
  SSL_CTX_up_ref(g_pending_ctx);
  *ssl_ctx = g_pending_ctx;
  return 1;
}

// civetweb's own complaints (a failed handshake, a bad request) go to our log.
int LogMessage(const struct mg_connection*, const char* message) {
  runtime::Log(runtime::LogLevel::kInfo, "metrics endpoint", {{"message", message}});
  return 1;
}

// civetweb loads OpenSSL by the names "libssl.so" and "libcrypto.so" when its
// first TLS port starts; with Debian 12's packages the first must be the
// compatibility library (rpc/civetweb_openssl3.cc), loaded once, never
// unloaded.
absl::Status PrepareCivetwebOpenSsl() {
  static void* const shim = dlopen(ATTNROLL_CIVETWEB_OPENSSL3, RTLD_NOW | RTLD_LOCAL);
  if (shim == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-tls-cert: cannot load ", ATTNROLL_CIVETWEB_OPENSSL3,
        " (the OpenSSL 3 compatibility library civetweb needs): ", dlerror()));
  }
  for (const char* lib : {"libssl.so", "libcrypto.so"}) {
    void* handle = dlopen(lib, RTLD_LAZY);
    if (handle == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--metrics-tls-cert: Debian's civetweb loads OpenSSL at run time as \"", lib,
          "\", which only the libssl-dev package installs (", dlerror(), ")"));
    }
    const bool whole = std::string(lib) != "libssl.so" ||
                       dlsym(handle, "SSL_get_peer_certificate") != nullptr;
    dlclose(handle);
    if (!whole) {
      return absl::InternalError(
          "--metrics-tls-cert: civetweb would load a libssl.so without SSL_get_peer_certificate");
    }
  }
  return absl::OkStatus();
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buffer[256];
  ERR_error_string_n(e, buffer, sizeof(buffer));
  return buffer;
}

}  // namespace

int MetricsEndpoint::CertCallback(SSL* ssl, void* arg) {
  auto* self = static_cast<MetricsEndpoint*>(arg);
  const std::shared_ptr<const TlsMaterial> m = self->tls_->current();
  if (SSL_use_certificate(ssl, m->leaf()) != 1 || SSL_use_PrivateKey(ssl, m->key()) != 1 ||
      SSL_set1_chain(ssl, m->chain()) != 1) {
    return 0;  // the handshake fails
  }
  if (m->client_cas() != nullptr && SSL_set1_verify_cert_store(ssl, m->client_cas()) != 1) return 0;
  return 1;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const runtime::ServerConfig& config, runtime::Metrics* metrics) {
  const runtime::SecurityConfig& t = config.security;
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  std::string ports = config.metrics_listen;
  if (t.metrics_tls()) {
    absl::StatusOr<std::unique_ptr<WatchedTlsFiles>> files = WatchedTlsFiles::Open(
        {t.metrics_tls_cert, t.metrics_tls_key, t.metrics_tls_client_ca, "--metrics-tls-cert",
         "--metrics-tls-key", "--metrics-tls-client-ca"});
    if (!files.ok()) return files.status();
    e->tls_ = *std::move(files);
    if (absl::Status s = PrepareCivetwebOpenSsl(); !s.ok()) return s;
    e->ssl_ctx_ = SSL_CTX_new(TLS_server_method());
    if (e->ssl_ctx_ == nullptr) return absl::InternalError(absl::StrCat("metrics: ", OpenSslError()));
    SSL_CTX_set_min_proto_version(e->ssl_ctx_, TLS1_2_VERSION);
    SSL_CTX_set_options(e->ssl_ctx_, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cert_cb(e->ssl_ctx_, &MetricsEndpoint::CertCallback, e.get());
    if (!t.metrics_tls_client_ca.empty()) {
      SSL_CTX_set_verify(e->ssl_ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      static const unsigned char kSessionContext[] = "attnroll-metrics";
      SSL_CTX_set_session_id_context(e->ssl_ctx_, kSessionContext, sizeof(kSessionContext) - 1);
    }
    ports += "s";  // civetweb: an "s" after the port means TLS
  }
  CivetCallbacks callbacks;
  callbacks.log_message = &LogMessage;
  if (e->ssl_ctx_ != nullptr) callbacks.external_ssl_ctx = &ExternalSslCtx;
  std::string failed;
  {
    absl::MutexLock lock(&g_construct_mu);
    g_pending_ctx = e->ssl_ctx_;
    try {
      // Enough threads that idle or slow connections cannot hold every one,
      // and a request timeout that frees the ones they hold.
      e->exposer_ = std::make_unique<prometheus::Exposer>(
          std::vector<std::string>{"listening_ports", ports, "num_threads", "8",
                                   "request_timeout_ms", "5000", "enable_keep_alive", "no"},
          &callbacks);
    } catch (const std::exception& ex) {
      failed = ex.what();
    }
    g_pending_ctx = nullptr;
  }
  if (e->exposer_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", config.metrics_listen, ": ", failed));
  }
  e->exposer_->RegisterCollectable(metrics->registry());
  e->exposer_->RegisterCollectable(metrics->live());
  const std::vector<int> listening = e->exposer_->GetListeningPorts();
  e->port_ = listening.empty() ? 0 : listening.front();
  return e;
}

MetricsEndpoint::~MetricsEndpoint() {
  exposer_.reset();  // no handshake runs after this
  if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
}

void MetricsEndpoint::ReloadIfChanged() {
  if (tls_ == nullptr) return;
  std::string error;
  switch (tls_->ReloadIfChanged(&error)) {
    case WatchedTlsFiles::Reload::kUnchanged: break;
    case WatchedTlsFiles::Reload::kReloaded:
      runtime::Log(runtime::LogLevel::kInfo, "tls: metrics port certificate reloaded",
                   {{"certificate", tls_->current()->Describe()}});
      break;
    case WatchedTlsFiles::Reload::kFailed:
      runtime::Log(runtime::LogLevel::kError, "tls: metrics port files not reloaded, the previous ones stay in use",
                   {{"message", error}});
      break;
  }
}

}  // namespace attnroll::rpc
