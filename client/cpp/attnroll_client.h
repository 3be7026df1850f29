// C++ client of attnroll: streams the attention of a forward pass and returns
// the server's ExplainResponse. Errors come back as absl::Status with the
// server's gRPC code and message.
#ifndef ATTNROLL_CLIENT_CPP_ATTNROLL_CLIENT_H_
#define ATTNROLL_CLIENT_CPP_ATTNROLL_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnroll/v1/attnroll.grpc.pb.h"

namespace attnroll::client {

// A float32 array [batch, layers, heads, tokens, tokens], row-major, and
// optionally its gradient (same shape) for gradient-weighted rollout.
struct AttentionView {
  const float* data = nullptr;
  int64_t batch = 1, layers = 0, heads = 0, tokens = 0;
  const float* gradient = nullptr;
  // Residual weights: [batch, layers] or, with residual_per_token,
  // [batch, layers, tokens]. Value norms: [batch, layers, heads, tokens].
  const float* residual_weights = nullptr;
  bool residual_per_token = false;
  const float* value_norms = nullptr;
  // Rows of each matrix when they differ from `tokens` (cross-attention:
  // decoder queries x encoder keys); 0 = tokens.
  int64_t query_tokens = 0;
  int64_t rows() const { return query_tokens > 0 ? query_tokens : tokens; }
};

// The three stacks of an encoder-decoder pass ([L, H, n, n] each, or [B, ...]):
// encoder self-attention [Le, H, n_enc, n_enc], decoder self-attention
// [Ld, H, n_dec, n_dec], cross-attention [Ld, H, n_dec, n_enc] (query_tokens
// = n_dec). Gradients in each view's `gradient` for the RULES composition.
struct EncoderDecoderView {
  AttentionView encoder, decoder, cross;
};

struct ExplainOptions {
  v1::DType wire = v1::DTYPE_FP32;
  // Layers are split by head range so no message exceeds this many bytes.
  int64_t max_message_bytes = int64_t{4} << 20;
  absl::Duration timeout = absl::Minutes(10);
};

// Stats of the last call, for summaries.
struct CallStats {
  int64_t bytes_sent = 0;
  int messages_sent = 0;
  double seconds = 0;
};

absl::Status FromGrpcStatus(const grpc::Status& status);

class Client {
 public:
  explicit Client(std::shared_ptr<grpc::Channel> channel);
  // An insecure channel to HOST:PORT that accepts responses of any size.
  static std::unique_ptr<Client> Connect(const std::string& target);

  absl::StatusOr<v1::ServerInfo> GetServerInfo(absl::Duration timeout = absl::Seconds(10));

  // One pass over Explain: `header` (its layout is filled from `attention`
  // where left at 0), then every layer, then half-close.
  absl::StatusOr<v1::ExplainResponse> Explain(v1::PassHeader header, const AttentionView& attention,
                                              const ExplainOptions& options = {},
                                              CallStats* stats = nullptr);

  // The same pass over ExplainStream, which also reports progress of long
  // analyses (attention flow) through `progress` (may be empty).
  using ProgressFn = std::function<void(const v1::Progress&)>;
  absl::StatusOr<v1::ExplainResponse> ExplainWithProgress(v1::PassHeader header,
                                                          const AttentionView& attention,
                                                          const ExplainOptions& options,
                                                          const ProgressFn& progress,
                                                          CallStats* stats = nullptr);

  // One encoder-decoder pass over Explain: the header (its encoder_decoder
  // layout filled from the views where left at 0), then the encoder layers,
  // then each decoder layer's self- and cross-attention.
  absl::StatusOr<v1::ExplainResponse> ExplainEncoderDecoder(v1::PassHeader header,
                                                            const EncoderDecoderView& stacks,
                                                            const ExplainOptions& options = {},
                                                            CallStats* stats = nullptr);

  // One input under two models (same layout and analyses): both passes
  // streamed over ExplainPair, both responses and their maps' comparison back.
  absl::StatusOr<v1::PairResponse> ExplainPair(v1::PassHeader header,
                                               const v1::CompareOptions& compare,
                                               const AttentionView& baseline,
                                               const AttentionView& candidate,
                                               const ExplainOptions& options = {});

  absl::StatusOr<v1::CompareResponse> Compare(const v1::CompareRequest& request,
                                              absl::Duration timeout = absl::Minutes(1));

  v1::AttnrollService::Stub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<v1::AttnrollService::Stub> stub_;
};

// The messages of layer `layer` of `attention`, split by head range so each
// holds at most max_message_bytes of tensor data (at least one head).
std::vector<v1::LayerChunk> LayerChunks(const AttentionView& attention, int layer, v1::DType wire,
                                        int64_t max_message_bytes);

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_ATTNROLL_CLIENT_H_
