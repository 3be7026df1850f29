// C++ client of attnroll: every RPC of attnroll.v1.AttnrollService. Streams
// the attention of forward passes and returns the server's results; audits a
// candidate model against a baseline item by item. Errors come back as
// absl::Status with the server's gRPC code and message.
#ifndef ATTNROLL_CLIENT_CPP_ATTNROLL_CLIENT_H_
#define ATTNROLL_CLIENT_CPP_ATTNROLL_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "attnroll/v1/attnroll.grpc.pb.h"
#include "client/cpp/attention_view.h"
#include "client/cpp/channel.h"
#include "client/cpp/head_fusion.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace attnroll::client {

struct ExplainOptions {
  v1::DType wire = v1::DTYPE_FP32;
  // Fuse heads on the client when the pass allows it (see head_fusion.h):
  // H times fewer attention bytes. Single-stack passes sent whole (Explain,
  // ExplainWithProgress, PassStream::AddPass, PreparedPass, ExplainPair,
  // AuditStream::AddPasses); BeginPass/AddLayer and encoder-decoder passes
  // send what they are given.
  ClientFusion client_fusion = ClientFusion::kAuto;
  // Threads that fuse the heads of a pass of at least kParallelFusionBytes:
  // the calling thread and fusion_threads - 1 started for the call. The CLI's
  // explain uses up to 4, as many as the CPUs it may run on; a model server
  // calling in its serving path keeps 1 unless it has a core to spare.
  int fusion_threads = 1;
  // Layers are split by head range so no message exceeds this many bytes.
  int64_t max_message_bytes = int64_t{4} << 20;
  absl::Duration timeout = absl::Minutes(10);
};

// Stats of the last call, for summaries.
struct CallStats {
  // The heads were fused on the client (one head per layer message).
  bool heads_fused_on_client = false;
  // Of every send of the pass (see Client's re-sends).
  int64_t bytes_sent = 0;
  int messages_sent = 0;
  double seconds = 0;
  // Sends of the whole pass: 1, or more when a send ended UNAVAILABLE and
  // the pass was sent again (Client's pass_attempts). Retries gRPC made
  // inside one call (its retry policy) are not counted here.
  int sends = 1;
  // The server the last send reached, as gRPC names it
  // ("ipv4:127.0.0.1:50051"); empty when no connection was made, and from
  // ExplainWithProgress (a stream, whose peer the client does not see).
  std::string peer;
};

absl::Status FromGrpcStatus(const grpc::Status& status);
// An in-band error (ExplainStream's PassError, AuditItemResult.error) as a
// status with its code and message.
absl::Status FromPassError(const v1::PassError& error);

class AuditStream;
class PassStream;

// A pass encoded for the wire once, to be sent any number of times
// (Client::Explain(const PreparedPass&), PassStream::AddPass(id, const
// PreparedPass&)): its header and every layer message, already split by
// head range and encoded to the wire dtype. Sending it builds no message and
// encodes nothing: each stored message is lent to the request for the length
// of its write, so gRPC's serialisation is the only copy of the tensor bytes
// made on the client per send. For senders of the same input many times
// (load tests, replays) and for model servers whose attention is already in
// the wire dtype (build the chunks and use the second constructor).
//
// Immutable once built: one PreparedPass may be sent by many threads at
// once. Move-only (a pass is large; copies are explicit, through chunks()).
class PreparedPass {
 public:
  // Encodes `attention` as Explain would send it, one message per layer
  // chunk (Explain itself sends the small layers of a pass fused on the
  // client several per message, as LayerBatch; a prepared pass does not):
  // `header` with its layout filled from the view where left at 0, then
  // every layer, split under
  // options.max_message_bytes, at options.wire, heads fused when
  // options.client_fusion allows (kOn as kAuto: a constructor cannot refuse;
  // see heads_fused_on_client()). options.timeout is not used.
  // Holds the whole pass in the wire dtype (Explain holds one layer at a time).
  PreparedPass(v1::PassHeader header, const AttentionView& attention,
               const ExplainOptions& options = {});
  // Takes `header` and `chunks` as they are (e.g. from LayerChunks, one layer
  // at a time, with their `layer` set): the header's layout must describe
  // the chunks, in the order they are to be sent. Nothing is checked here;
  // the server validates the pass as it would any other.
  PreparedPass(v1::PassHeader header, std::vector<v1::LayerChunk> chunks);

  PreparedPass(PreparedPass&&) = default;
  PreparedPass& operator=(PreparedPass&&) = default;
  PreparedPass(const PreparedPass&) = delete;
  PreparedPass& operator=(const PreparedPass&) = delete;

  const v1::PassHeader& header() const { return header_; }
  // The layer messages, in the order they are sent.
  const std::vector<v1::LayerChunk>& chunks() const { return chunks_; }
  // Messages of one send: the header and every layer message (ExplainStream
  // adds its PassEnd, which CallStats does not count).
  int messages() const { return 1 + static_cast<int>(chunks_.size()); }
  // Tensor bytes of one send: the attention and gradient data of every layer
  // message, as CallStats::bytes_sent counts them.
  int64_t tensor_bytes() const { return tensor_bytes_; }
  // The heads were fused on the client (ExplainOptions::client_fusion).
  bool heads_fused_on_client() const { return heads_fused_on_client_; }

 private:
  v1::PassHeader header_;
  bool heads_fused_on_client_ = false;
  std::vector<v1::LayerChunk> chunks_;
  int64_t tensor_bytes_ = 0;
};

// Options of an Audit call (Client::Audit).
struct AuditOptions {
  // Deadline of the whole call, from Client::Audit.
  absl::Duration timeout = absl::Minutes(10);
  // Called with each item's result as it arrives (completion order, not the
  // order sent), on the stream's reader thread. May be empty.
  std::function<void(const v1::AuditItemResult&)> on_item;
};

// Options of an ExplainStream call (Client::ExplainStream).
struct PassStreamOptions {
  // Deadline of the whole call, from Client::ExplainStream.
  absl::Duration timeout = absl::Minutes(10);
  // Called once per pass with its results or its in-band error (the
  // PassError as a status), on the stream's reader thread. May be empty.
  std::function<void(const std::string& request_id, absl::StatusOr<v1::ExplainResponse> result)>
      on_result;
  // Called with the progress of a pass's long analyses (attention flow),
  // before its result, on the stream's reader thread. May be empty.
  std::function<void(const std::string& request_id, const v1::Progress& progress)> on_progress;
  // Called once when the call has ended (the server closed it, the deadline
  // passed, Cancel, or the last response after Finish's half-close), after
  // every other callback, on the stream's reader thread; Finish then returns
  // its status without waiting. Lets a caller that waits for a result stop
  // waiting when none can come. May be empty.
  std::function<void()> on_done;
};

// A client of every RPC of attnroll.v1.AttnrollService. Unary and
// client-streaming RPCs are single calls; the two bidirectional ones
// (ExplainStream, Audit) are stream objects (PassStream, AuditStream).
// A Client may be used from several threads at once; each call has its own
// gRPC context.
//
// Re-sends. A pass sent over Explain or ExplainPair (every overload of
// Explain, ExplainEncoderDecoder, ExplainPair) is held by the caller until
// the call returns, so when the call ends UNAVAILABLE (its replica vanished,
// is draining, or cannot be reached; gRPC's own retry policy could not help,
// e.g. because the pass was larger than gRPC's 256 KiB retry buffer) the
// client sends the whole pass again as a new call, up to pass_attempts sends
// in all, after 0.1 s, 0.2 s, 0.4 s, ... and within the call's one deadline.
// On a round_robin channel the new call goes to another ready replica.
// ExplainWithProgress, the streams (ExplainStream, Audit) and unary calls
// are not re-sent by the client: a stream's passes are the caller's (and
// results may already have come back), and unary calls are small enough
// for gRPC's retry policy (ConnectOptions::attempts) to retry them whole.
class Client {
 public:
  // pass_attempts: sends of a pass, 1 (no re-send) .. kMaxAttempts.
  explicit Client(std::shared_ptr<grpc::Channel> channel, int pass_attempts = 1);
  // An insecure channel to HOST:PORT that accepts responses of any size.
  static std::unique_ptr<Client> Connect(const std::string& target);
  // A channel with TLS, a client certificate, a token, load balancing and
  // retries as `options` say (client/cpp/channel.h; pass_attempts is
  // EffectiveAttempts); errors of the options (an unreadable file) are
  // INVALID_ARGUMENT. A server that refuses the TLS handshake shows as
  // UNAVAILABLE on the first call, a missing or wrong token as
  // UNAUTHENTICATED.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& target,
                                                         const ConnectOptions& options);

  absl::StatusOr<v1::ServerInfo> GetServerInfo(absl::Duration timeout = absl::Seconds(10));

  // The standard health service (grpc.health.v1.Health/Check) for `service`:
  // "" is the whole server, "attnroll.v1.AttnrollService" the API. The serving
  // status the server answered (SERVING, or NOT_SERVING while it drains), or
  // the call's error: UNAVAILABLE when nothing answers (the call does not wait
  // for the server to come up), NOT_FOUND for a service the server does not know.
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;
  absl::StatusOr<ServingStatus> CheckHealth(const std::string& service = "",
                                            absl::Duration timeout = absl::Seconds(5));

  // One pass over Explain: `header` (its layout is filled from `attention`
  // where left at 0), then every layer, then half-close.
  absl::StatusOr<v1::ExplainResponse> Explain(v1::PassHeader header, const AttentionView& attention,
                                              const ExplainOptions& options = {},
                                              CallStats* stats = nullptr);

  // The same single pass over ExplainStream, which also reports progress of
  // long analyses (attention flow) through `progress` (may be empty; called
  // on another thread than the caller's). A PassStream with one pass.
  using ProgressFn = std::function<void(const v1::Progress&)>;
  absl::StatusOr<v1::ExplainResponse> ExplainWithProgress(v1::PassHeader header,
                                                          const AttentionView& attention,
                                                          const ExplainOptions& options,
                                                          const ProgressFn& progress,
                                                          CallStats* stats = nullptr);

  // One prepared pass over Explain: its header, its layer messages as
  // stored, then half-close. `stats`, when given, gets the messages and
  // tensor bytes written (a write the call refused is not counted) and the
  // call's seconds.
  absl::StatusOr<v1::ExplainResponse> Explain(const PreparedPass& pass,
                                              absl::Duration timeout = absl::Minutes(10),
                                              CallStats* stats = nullptr);

  // Opens an ExplainStream call: many passes over one stream, by request id.
  std::unique_ptr<PassStream> ExplainStream(PassStreamOptions options = {});

  // One encoder-decoder pass over Explain: the header (its encoder_decoder
  // layout filled from the views where left at 0), then the encoder layers,
  // then each decoder layer's self- and cross-attention.
  absl::StatusOr<v1::ExplainResponse> ExplainEncoderDecoder(v1::PassHeader header,
                                                            const EncoderDecoderView& stacks,
                                                            const ExplainOptions& options = {},
                                                            CallStats* stats = nullptr);

  // One input under two models (same shape, layout and analyses): both
  // passes streamed over ExplainPair, layer by layer, baseline then
  // candidate; both responses and their maps' comparison back. Views of
  // different shapes are refused here (INVALID_ARGUMENT).
  absl::StatusOr<v1::PairResponse> ExplainPair(v1::PassHeader header,
                                               const v1::CompareOptions& compare,
                                               const AttentionView& baseline,
                                               const AttentionView& candidate,
                                               const ExplainOptions& options = {});

  absl::StatusOr<v1::CompareResponse> Compare(const v1::CompareRequest& request,
                                              absl::Duration timeout = absl::Minutes(1));

  // Live monitoring: the state of one model (or all), and the baselines.
  absl::StatusOr<v1::MonitorResponse> Monitor(const v1::MonitorRequest& request,
                                              absl::Duration timeout = absl::Seconds(30));
  absl::StatusOr<v1::PinBaselineResponse> PinBaseline(const v1::PinBaselineRequest& request,
                                                      absl::Duration timeout = absl::Seconds(30));
  absl::StatusOr<v1::ListBaselinesResponse> ListBaselines(absl::Duration timeout = absl::Seconds(30));
  absl::StatusOr<v1::RemoveBaselineResponse> RemoveBaseline(const std::string& name,
                                                            absl::Duration timeout = absl::Seconds(30));

  // Opens an Audit call and sends `header`. Errors of the call (a bad
  // header, the deadline) come back from AuditStream::Finish.
  std::unique_ptr<AuditStream> Audit(const v1::AuditHeader& header, AuditOptions options = {});

  int pass_attempts() const { return pass_attempts_; }

  // The generated stub, for tests and tools that must send raw messages
  // (e.g. malformed ones on purpose). Everything else has a method above.
  v1::AttnrollService::Stub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<v1::AttnrollService::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  int pass_attempts_;
};

// An open Audit call: items go out with AddMaps and AddPasses, each item's
// result comes back through AuditOptions::on_item as soon as the server has
// compared it, and Finish returns the report.
//
// Threading. The stream reads the server's messages on a thread of its own
// from the moment it is opened, so writing never waits for the caller to
// read: the server stops reading while its results wait for the client, and
// a client that wrote everything before reading anything would stall.
// on_item runs on that reader thread, concurrently with the caller's Add*
// calls: state it shares with the writing thread needs synchronising (or
// may be read after Finish returns, which joins the reader thread). on_item
// must not call into the stream. AddMaps, AddPasses and Finish must not be
// called concurrently with each other (one writer, as gRPC's sync API
// requires); Cancel may be called from any thread at any time.
//
// Errors of Add*: OK once the item is written; INVALID_ARGUMENT for an item
// refused here before anything was sent (the stream goes on);
// FAILED_PRECONDITION once the call has ended (the server closed it, the
// deadline passed, Cancel or Finish was called): stop and call Finish for
// the reason. Items the server refuses come back in-band, in on_item, with
// AuditItemResult.error set and their id.
class AuditStream {
 public:
  ~AuditStream();  // cancels the call if Finish was not called
  AuditStream(const AuditStream&) = delete;
  AuditStream& operator=(const AuditStream&) = delete;

  // An item given as two saliency maps (AuditHeader.map_length values each,
  // any shape and dtype). `group` may be empty.
  absl::Status AddMaps(const std::string& id, const std::string& group, const v1::Tensor& baseline,
                       const v1::Tensor& candidate);
  // The same with two float32 maps of map_length values.
  absl::Status AddMaps(const std::string& id, const std::string& group,
                       absl::Span<const float> baseline, absl::Span<const float> candidate);

  // An item given as the attention of two passes over the same input: a
  // pass_begin with `pass_header` (its layout filled from `baseline` where
  // left at 0), every layer, layer by layer, baseline then candidate (each
  // split by head range under options.max_message_bytes, at options.wire),
  // and a pass_end. The views must have the same shape (INVALID_ARGUMENT
  // otherwise). options.timeout is not used (the call has its own).
  absl::Status AddPasses(const std::string& id, const std::string& group, v1::PassHeader pass_header,
                         const AttentionView& baseline, const AttentionView& candidate,
                         const ExplainOptions& options = {});

  // Half-closes (the items are complete), waits for the last result and the
  // report, and returns the report, or the status that ended the call.
  // Not concurrently with Add*; later calls return the same.
  absl::StatusOr<v1::AuditReport> Finish();

  // Cancels the call: the server stops, Finish returns CANCELLED.
  void Cancel();

 private:
  friend class Client;
  struct Impl;
  explicit AuditStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// An open ExplainStream call: passes go out by request id (AddPass, or
// BeginPass / AddLayer / EndPass to interleave passes or send layers as they
// are computed); each pass's progress and its results or in-band error come
// back through PassStreamOptions' callbacks. Passes complete in the order of
// their ends; at most Limits.max_passes_per_stream may be open at once.
//
// Threading and errors: as AuditStream. The callbacks run on the stream's
// own reader thread (one at a time), concurrently with the caller's writes;
// they must not call into the stream. The writing methods and Finish must
// not run concurrently with each other; Cancel may run on any thread.
// INVALID_ARGUMENT from a writing method refuses that call only (nothing
// was sent); FAILED_PRECONDITION means the call has ended.
class PassStream {
 public:
  ~PassStream();  // cancels the call if Finish was not called
  PassStream(const PassStream&) = delete;
  PassStream& operator=(const PassStream&) = delete;

  // A whole pass: its header (layout filled from `attention` where left at
  // 0), every layer, its end. options.timeout is not used. `stats`, when
  // given, gains the messages and tensor bytes sent.
  absl::Status AddPass(const std::string& request_id, v1::PassHeader header,
                       const AttentionView& attention, const ExplainOptions& options = {},
                       CallStats* stats = nullptr);

  // A prepared pass, as stored (its header's request_id is replaced by
  // `request_id`), then its end. `stats`, when given, gains the messages and
  // tensor bytes written.
  absl::Status AddPass(const std::string& request_id, const PreparedPass& pass,
                       CallStats* stats = nullptr);

  // The parts of a pass, for interleaving passes: the header (its layout as
  // the server should see it), then each layer, then the end. `layer_view`
  // holds one layer (layers == 1: [B, 1, H, n, n]), sent as layer `layer`
  // (split by head range as in AddPass).
  absl::Status BeginPass(const std::string& request_id, const v1::PassHeader& header);
  absl::Status AddLayer(const std::string& request_id, int layer, const AttentionView& layer_view,
                        const ExplainOptions& options = {}, CallStats* stats = nullptr);
  absl::Status EndPass(const std::string& request_id);

  // Half-closes, waits for every response (passes still open get an
  // in-band error) and returns the call's status. Not concurrently with the
  // writing methods; later calls return the same.
  absl::Status Finish();

  // Cancels the call: Finish returns CANCELLED.
  void Cancel();

 private:
  friend class Client;
  struct Impl;
  explicit PassStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The messages of layer `layer` of `attention`, split by head range so each
// holds at most max_message_bytes of tensor data (at least one head).
std::vector<v1::LayerChunk> LayerChunks(const AttentionView& attention, int layer, v1::DType wire,
                                        int64_t max_message_bytes);

}  // namespace attnroll::client

#endif  // ATTNROLL_CLIENT_CPP_ATTNROLL_CLIENT_H_
