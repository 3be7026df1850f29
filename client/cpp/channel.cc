#include "client/cpp/channel.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnroll::client {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, " ", path, ": cannot read: ", std::strerror(errno)));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Adds "authorization: Bearer <token>" to the initial metadata of every call.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;
};

class TokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token) : value_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&value_);
  }

 private:
  const std::string value_;  // lives with the channel, which owns the factory
};

// The addresses of a static ipv4:/ipv6: list; 1 for any other target.
int StaticAddresses(const std::string& target) {
  if (target.rfind("ipv4:", 0) != 0 && target.rfind("ipv6:", 0) != 0) return 1;
  return 1 + static_cast<int>(std::count(target.begin(), target.end(), ','));
}

}  // namespace

const char* LbPolicyName(LbPolicy lb) {
  switch (lb) {
    case LbPolicy::kRoundRobin:
      return "round_robin";
    case LbPolicy::kPickFirst:
      return "pick_first";
    case LbPolicy::kAuto:
      break;
  }
  return "auto";
}

bool ParseLbPolicy(const std::string& name, LbPolicy* out) {
  for (LbPolicy lb : {LbPolicy::kAuto, LbPolicy::kRoundRobin, LbPolicy::kPickFirst}) {
    if (name == LbPolicyName(lb)) {
      *out = lb;
      return true;
    }
  }
  return false;
}

LbPolicy EffectiveLbPolicy(const std::string& target, LbPolicy lb) {
  if (lb != LbPolicy::kAuto) return lb;
  return target.rfind("dns:", 0) == 0 || StaticAddresses(target) > 1 ? LbPolicy::kRoundRobin
                                                                      : LbPolicy::kPickFirst;
}

int EffectiveAttempts(const std::string& target, const ConnectOptions& options) {
  if (options.attempts != 0) return options.attempts;
  return EffectiveLbPolicy(target, options.lb) == LbPolicy::kRoundRobin ? 3 : 1;
}

std::string ServiceConfigJson(const std::string& target, const ConnectOptions& options) {
  std::string json = absl::StrCat(R"({"loadBalancingConfig": [{")",
                                  LbPolicyName(EffectiveLbPolicy(target, options.lb)), R"(": {}}])");
  const int attempts = EffectiveAttempts(target, options);
  if (attempts > 1) {
    // Every method but PinBaseline and RemoveBaseline (not safe to repeat).
    static constexpr const char* kRetried[] = {"Explain", "ExplainStream", "GetServerInfo",
                                               "Compare", "ExplainPair",   "Audit",
                                               "Monitor", "ListBaselines"};
    std::vector<std::string> names;
    for (const char* m : kRetried) {
      names.push_back(absl::StrCat(R"({"service": "attnroll.v1.AttnrollService", "method": ")", m, R"("})"));
    }
    absl::StrAppend(&json, R"(, "methodConfig": [{"name": [)", absl::StrJoin(names, ", "), "], ",
                    R"("retryPolicy": {"maxAttempts": )", attempts,
                    R"(, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2, )",
                    R"("retryableStatusCodes": ["UNAVAILABLE"]}}])");
  }
  return json + "}";
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target,
                                                          const ConnectOptions& options,
                                                          grpc::ChannelArguments args) {
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Layers of attention are megabytes: large HTTP/2 frames and write buffers.
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  if (options.attempts < 0 || options.attempts > kMaxAttempts) {
    return absl::InvalidArgumentError(absl::StrCat("attempts: expected 1..", kMaxAttempts,
                                                   " (0: automatic), got ", options.attempts));
  }
  args.SetServiceConfigJSON(ServiceConfigJson(target, options));
  // Ours, never one from DNS TXT records.
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  for (char ch : options.token) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x21 || u > 0x7e) {
      return absl::InvalidArgumentError(
          "token: expected printable ASCII without spaces (what gRPC metadata can carry)");
    }
  }
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(options.cert_file.empty()
                                          ? "key_file: needs cert_file (the key's certificate)"
                                          : "cert_file: needs key_file (the certificate's key)");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.UsesTls()) {
    grpc::SslCredentialsOptions ssl;
    for (auto [path, option, pem] :
         {std::tuple{&options.ca_file, "ca_file", &ssl.pem_root_certs},
          std::tuple{&options.cert_file, "cert_file", &ssl.pem_cert_chain},
          std::tuple{&options.key_file, "key_file", &ssl.pem_private_key}}) {
      if (path->empty()) continue;
      absl::StatusOr<std::string> read = ReadPem(*path, option);
      if (!read.ok()) return read.status();
      *pem = *std::move(read);
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.server_name.empty()) args.SetSslTargetNameOverride(options.server_name);
  } else {
    if (!options.server_name.empty()) {
      return absl::InvalidArgumentError("server_name: only with TLS (ca_file, cert_file or tls)");
    }
    credentials = grpc::InsecureChannelCredentials();
  }
  if (options.token.empty()) return grpc::CreateCustomChannel(target, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(options.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, args,
                                                                 std::move(interceptors));
}

}  // namespace attnroll::client
