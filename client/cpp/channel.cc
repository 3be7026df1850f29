#include "client/cpp/channel.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include <grpcpp/support/client_interceptor.h>

#include "absl/strings/str_cat.h"

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

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const std::string& target,
                                                          const ConnectOptions& options,
                                                          grpc::ChannelArguments args) {
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Layers of attention are megabytes: large HTTP/2 frames and write buffers.
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
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
