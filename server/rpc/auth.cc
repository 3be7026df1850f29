#include "server/rpc/auth.h"

#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "attnroll/v1/attnroll.grpc.pb.h"
#include "server/runtime/logging.h"
#include "server/runtime/refusal.h"

namespace attnroll::rpc {
namespace {

constexpr char kAuthorization[] = "authorization";
constexpr char kBearer[] = "bearer ";  // the scheme is case-insensitive (RFC 6750, RFC 7235)

absl::string_view View(const grpc::string_ref& s) { return absl::string_view(s.data(), s.size()); }

const std::string& OwnPrefix() {
  static const std::string* prefix =
      new std::string(absl::StrCat("/", v1::AttnrollService::service_full_name(), "/"));
  return *prefix;
}

// "ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1"; "ipv6:[::1]:5555" -> "ipv6:[::1]".
std::string HostOf(const std::string& peer) {
  const size_t colon = peer.rfind(':');
  const size_t first = peer.find(':');
  if (colon == std::string::npos || colon == first) return peer;  // no port (e.g. unix:)
  return peer.substr(0, colon);
}

absl::Status Refuse(absl::string_view what) {
  return runtime::Refused(runtime::Refusal::kAuth,
                          absl::StrCat("authentication: metadata \"", kAuthorization, "\": ", what));
}

}  // namespace

Access AccessOf(absl::string_view path) {
  if (absl::StartsWith(path, "/grpc.health.v1.Health/")) return Access::kOpen;
  if (absl::StartsWith(path, "/grpc.reflection.") ||
      path == absl::StrCat(OwnPrefix(), "GetServerInfo")) {
    return Access::kInfo;
  }
  return Access::kWork;
}

Authenticator::Authenticator(const runtime::SecurityConfig& config, const runtime::TokenStore* tokens)
    : tokens_(tokens),
      info_requires_auth_(config.info_requires_auth),
      client_certificates_(!config.tls_client_ca.empty()) {}

Authentication Authenticator::Check(Access access, const Metadata& metadata,
                                    const grpc::AuthContext* auth, const std::string& peer) const {
  Authentication out;
  out.identity.name = HostOf(peer);
  out.identity.label = runtime::kAnonymousLabel;
  if (auth != nullptr && client_certificates_) {
    // Mutual TLS: the certificate's subject CN (a connection's property).
    const std::vector<grpc::string_ref> cn = auth->FindPropertyValues("x509_common_name");
    if (!cn.empty() && !cn.front().empty()) {
      out.identity.name = absl::StrCat("cn:", View(cn.front()));
      out.identity.label = runtime::kCertificateLabel;
    }
  }
  if (tokens_ == nullptr) return out;
  const bool required =
      access == Access::kWork || (access == Access::kInfo && info_requires_auth_);

  const auto [first, last] = metadata.equal_range(kAuthorization);
  const auto values = std::distance(first, last);
  absl::Status refusal;
  // The table stays alive (a reload may swap it) while its name is used.
  const std::shared_ptr<const runtime::TokenTable> table = tokens_->table();
  const std::string* name = nullptr;
  if (values == 0) {
    refusal = Refuse("missing: expected \"Bearer <token>\" with a token of the server's token file");
  } else if (values > 1) {
    refusal = Refuse(absl::StrCat("expected one value, got ", values));
  } else {
    absl::string_view value = View(first->second);
    if (absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(value), "bearer")) {
      refusal = Refuse("expected \"Bearer <token>\", got no token after Bearer");
    } else if (value.size() < sizeof(kBearer) - 1 ||
               !absl::EqualsIgnoreCase(value.substr(0, sizeof(kBearer) - 1), kBearer)) {
      // Never echoed: a client that forgot the scheme sent the token itself.
      refusal = Refuse("expected \"Bearer <token>\", got a value without the Bearer scheme");
    } else {
      name = table->Find(absl::StripAsciiWhitespace(value.substr(sizeof(kBearer) - 1)));
      if (name == nullptr) refusal = Refuse("the bearer token is not one of the server's tokens");
    }
  }
  if (name != nullptr) {
    out.identity.name = *name;
    out.identity.label = *name;
    return out;
  }
  if (required) out.status = refusal;
  return out;
}

namespace {

class AuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  AuthProcessor(const Authenticator* auth, runtime::Metrics* metrics) : auth_(auth), metrics_(metrics) {}

  // The check is a table look-up: done on gRPC's thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context, OutputMetadata*,
                       OutputMetadata*) override {
    absl::string_view path;
    if (auto it = metadata.find(":path"); it != metadata.end()) path = View(it->second);
    const Access access = AccessOf(path);
    // Health is open; attnroll's own methods are checked by their reactors
    // (which log the peer and count the call in the one place calls end).
    if (access == Access::kOpen || absl::StartsWith(path, OwnPrefix())) return grpc::Status::OK;
    const Authentication a = auth_->Check(access, metadata, context, "");
    if (a.status.ok()) return grpc::Status::OK;
    const std::string rpc =
        absl::StartsWith(path, "/grpc.reflection.") ? "ServerReflectionInfo" : "unknown";
    metrics_->CallFinished(rpc, a.status.code(), 0);
    metrics_->Refused(runtime::Refusal::kAuth);
    metrics_->ClientCallFinished(a.identity.label, a.status.code());
    runtime::Log(runtime::LogLevel::kWarning, "refused",
                 {{"rpc", rpc},
                  {"method", path},
                  {"status", absl::StatusCodeToString(a.status.code())},
                  {"reason", runtime::RefusalName(runtime::Refusal::kAuth)},
                  {"message", a.status.message()}});
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(a.status.message()));
  }

 private:
  const Authenticator* const auth_;
  runtime::Metrics* const metrics_;
};

}  // namespace

std::shared_ptr<grpc::AuthMetadataProcessor> MakeAuthProcessor(const Authenticator* auth,
                                                                runtime::Metrics* metrics) {
  return std::make_shared<AuthProcessor>(auth, metrics);
}

}  // namespace attnroll::rpc
