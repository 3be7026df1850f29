#include "client/cpp/attnroll_client.h"

#include <algorithm>
#include <initializer_list>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cpp/tensor_encode.h"

namespace attnroll::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::Status FromPassError(const v1::PassError& error) {
  return absl::Status(static_cast<absl::StatusCode>(error.code()), error.message());
}

Client::Client(std::shared_ptr<grpc::Channel> channel, int pass_attempts)
    : stub_(v1::AttnrollService::NewStub(channel)),
      health_(grpc::health::v1::Health::NewStub(channel)),
      pass_attempts_(std::clamp(pass_attempts, 1, kMaxAttempts)) {}

std::unique_ptr<Client> Client::Connect(const std::string& target) {
  // Default options cannot fail (no files, no token).
  return *Connect(target, ConnectOptions());
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& target,
                                                        const ConnectOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = OpenChannel(target, options);
  if (!channel.ok()) return channel.status();
  return std::make_unique<Client>(*std::move(channel), EffectiveAttempts(target, options));
}

namespace {

// One unary call: `call(ctx, response)` runs it (a stub method).
template <typename Response, typename Call>
absl::StatusOr<Response> UnaryCall(absl::Duration timeout, Call&& call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  Response response;
  const grpc::Status status = call(&ctx, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace

absl::StatusOr<v1::ServerInfo> Client::GetServerInfo(absl::Duration timeout) {
  return UnaryCall<v1::ServerInfo>(timeout, [&](grpc::ClientContext* ctx, v1::ServerInfo* info) {
    return stub_->GetServerInfo(ctx, v1::GetServerInfoRequest(), info);
  });
}

absl::StatusOr<Client::ServingStatus> Client::CheckHealth(const std::string& service,
                                                          absl::Duration timeout) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> response =
      UnaryCall<grpc::health::v1::HealthCheckResponse>(
          timeout, [&](grpc::ClientContext* ctx, grpc::health::v1::HealthCheckResponse* r) {
            return health_->Check(ctx, request, r);
          });
  if (!response.ok()) return response.status();
  return response->status();
}

absl::StatusOr<v1::CompareResponse> Client::Compare(const v1::CompareRequest& request,
                                                    absl::Duration timeout) {
  return UnaryCall<v1::CompareResponse>(
      timeout, [&](grpc::ClientContext* ctx, v1::CompareResponse* response) {
        return stub_->Compare(ctx, request, response);
      });
}

absl::StatusOr<v1::MonitorResponse> Client::Monitor(const v1::MonitorRequest& request,
                                                    absl::Duration timeout) {
  return UnaryCall<v1::MonitorResponse>(timeout, [&](grpc::ClientContext* ctx, v1::MonitorResponse* r) {
    return stub_->Monitor(ctx, request, r);
  });
}

absl::StatusOr<v1::PinBaselineResponse> Client::PinBaseline(const v1::PinBaselineRequest& request,
                                                            absl::Duration timeout) {
  return UnaryCall<v1::PinBaselineResponse>(timeout,
                                            [&](grpc::ClientContext* ctx, v1::PinBaselineResponse* r) {
                                              return stub_->PinBaseline(ctx, request, r);
                                            });
}

absl::StatusOr<v1::ListBaselinesResponse> Client::ListBaselines(absl::Duration timeout) {
  v1::ListBaselinesRequest request;
  return UnaryCall<v1::ListBaselinesResponse>(timeout,
                                              [&](grpc::ClientContext* ctx, v1::ListBaselinesResponse* r) {
                                                return stub_->ListBaselines(ctx, request, r);
                                              });
}

absl::StatusOr<v1::RemoveBaselineResponse> Client::RemoveBaseline(const std::string& name,
                                                                  absl::Duration timeout) {
  v1::RemoveBaselineRequest request;
  request.set_name(name);
  return UnaryCall<v1::RemoveBaselineResponse>(timeout,
                                               [&](grpc::ClientContext* ctx, v1::RemoveBaselineResponse* r) {
                                                 return stub_->RemoveBaseline(ctx, request, r);
                                               });
}

std::vector<v1::LayerChunk> LayerChunks(const AttentionView& a, int layer, v1::DType wire,
                                        int64_t max_message_bytes) {
  const int64_t head_elems = a.rows() * a.tokens;
  // A message carries the heads' attention and, when present, their gradient.
  const int64_t head_bytes = a.batch * head_elems * static_cast<int64_t>(WireSize(wire)) *
                                 (a.gradient != nullptr ? 2 : 1) +
                             (a.value_norms != nullptr ? a.batch * a.tokens * 4 : 0);
  // Leave room for the message's own fields (and the layer's residual
  // weights) so the whole message stays under the cap.
  const int64_t budget =
      max_message_bytes - 1024 - (a.residual_weights != nullptr ? a.batch * a.tokens * 4 : 0);
  const int64_t per_chunk =
      std::clamp<int64_t>(head_bytes > 0 ? budget / head_bytes : a.heads, 1, a.heads);
  std::vector<v1::LayerChunk> chunks;
  for (int64_t h0 = 0; h0 < a.heads; h0 += per_chunk) {
    const int64_t h = std::min(per_chunk, a.heads - h0);
    v1::LayerChunk& chunk = chunks.emplace_back();
    chunk.set_layer(layer);
    chunk.set_head_start(static_cast<uint32_t>(h0));
    v1::Tensor* t = chunk.mutable_attention();
    auto fill = [&](const float* base, v1::Tensor* tensor) {
      tensor->set_dtype(wire);
      for (int64_t d : {a.batch, h, a.rows(), a.tokens}) tensor->add_shape(d);
      std::string* data = tensor->mutable_data();
      data->reserve(static_cast<size_t>(a.batch * h * head_elems * WireSize(wire)));
      for (int64_t b = 0; b < a.batch; ++b) {
        // Heads h0..h0+h of (b, layer) are contiguous in [B, L, H, n, n].
        const float* src = base + ((b * a.layers + layer) * a.heads + h0) * head_elems;
        AppendEncoded(wire, src, static_cast<size_t>(h * head_elems), data);
      }
    };
    fill(a.data, t);
    if (a.gradient != nullptr) fill(a.gradient, chunk.mutable_gradient());
    if (a.residual_weights != nullptr && h0 == 0) {
      // Per layer, on the layer's first message: [B] or [B, n].
      v1::Tensor* w = chunk.mutable_residual_weights();
      w->set_dtype(v1::DTYPE_FP32);
      const int64_t per = a.residual_per_token ? a.tokens : 1;
      w->add_shape(a.batch);
      if (a.residual_per_token) w->add_shape(a.tokens);
      for (int64_t b = 0; b < a.batch; ++b) {
        AppendEncoded(v1::DTYPE_FP32, a.residual_weights + (b * a.layers + layer) * per,
                      static_cast<size_t>(per), w->mutable_data());
      }
    }
    if (a.value_norms != nullptr) {
      v1::Tensor* v = chunk.mutable_value_norms();
      v->set_dtype(v1::DTYPE_FP32);
      for (int64_t d : {a.batch, h, a.tokens}) v->add_shape(d);
      for (int64_t b = 0; b < a.batch; ++b) {
        AppendEncoded(v1::DTYPE_FP32, a.value_norms + ((b * a.layers + layer) * a.heads + h0) * a.tokens,
                      static_cast<size_t>(h * a.tokens), v->mutable_data());
      }
    }
  }
  return chunks;
}

namespace {

// Fills the layout fields left at 0 from the array.
void CompleteLayout(const AttentionView& attention, v1::Layout* layout) {
  if (layout->num_layers() == 0) layout->set_num_layers(static_cast<uint32_t>(attention.layers));
  if (layout->num_heads() == 0) layout->set_num_heads(static_cast<uint32_t>(attention.heads));
  if (layout->num_tokens() == 0) layout->set_num_tokens(static_cast<uint32_t>(attention.tokens));
  if (layout->batch_size() == 0) layout->set_batch_size(static_cast<uint32_t>(attention.batch));
}

std::string ShapeOf(const AttentionView& v) {
  std::string s = absl::StrCat("[", absl::StrJoin({v.batch, v.layers, v.heads, v.rows(), v.tokens}, ", "),
                               "]");
  if (v.gradient != nullptr) s += " with gradient";
  if (v.residual_weights != nullptr) s += v.residual_per_token ? " with residual weights per token"
                                                               : " with residual weights";
  if (v.value_norms != nullptr) s += " with value norms";
  return s;
}

// OK when both sides of a pair have the same shape and side inputs, which
// the layer-by-layer loop over both relies on.
absl::Status CheckSameShape(const AttentionView& baseline, const AttentionView& candidate,
                            const std::string& what) {
  const std::string a = ShapeOf(baseline), b = ShapeOf(candidate);
  if (a == b) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, "candidate: expected the baseline's shape [B, L, H, rows, n] = ", a, ", got ", b));
}

// The attention and gradient bytes a layer message carries (CallStats::bytes_sent).
int64_t TensorBytes(const v1::LayerChunk& chunk) {
  return static_cast<int64_t>(chunk.attention().data().size() + chunk.gradient().data().size());
}

// Every layer message of `views` (each with `layers` layers): layer by
// layer and, within a layer, view by view, split by LayerChunks. Calls
// send(i, chunk), i the view's index in `views`, for each, and stops at the
// first false (then returns false). Counts messages and tensor bytes in
// *stats (may be null).
template <typename Send>
bool SendLayers(std::initializer_list<const AttentionView*> views, int64_t layers,
                const ExplainOptions& options, CallStats* stats, Send&& send) {
  for (int64_t l = 0; l < layers; ++l) {
    size_t side = 0;
    for (const AttentionView* view : views) {
      for (v1::LayerChunk& chunk :
           LayerChunks(*view, static_cast<int>(l), options.wire, options.max_message_bytes)) {
        if (stats != nullptr) {
          stats->bytes_sent += TensorBytes(chunk);
          ++stats->messages_sent;
        }
        if (!send(side, chunk)) return false;
      }
      ++side;
    }
  }
  return true;
}

// The payload a message of several layers (LayerBatch) aims at: per message,
// gRPC costs about as much as ~100 KB of payload on loopback.
constexpr int64_t kBatchBytes = 512 * 1024;

// Writes the header, then every layer, reusing `request` (ExplainRequest or
// StreamRequest); false when the call ended early (its Finish says why).
// Heads fused on the client (one small head per layer): consecutive layers
// go together in LayerBatch messages of about kBatchBytes (within
// max_message_bytes); otherwise one layer message per chunk.
template <typename Request, typename Stream>
bool WritePass(Stream& stream, Request& request, v1::PassHeader header,
               const AttentionView& attention, const ExplainOptions& options, CallStats* stats) {
  const bool batch = header.layout().heads_fused_by_client();
  // Within the cap, leaving room for the request's own fields (a stream's request_id).
  const int64_t target = std::min(kBatchBytes, options.max_message_bytes - 1024 - 256);
  // Messages and bytes are counted here, as written: several chunks may share one.
  auto write = [&] {
    if (stats != nullptr) ++stats->messages_sent;
    return stream.Write(request);
  };
  *request.mutable_header() = std::move(header);
  if (!write()) return false;
  int64_t held = 0;
  auto flush = [&] {
    if (held == 0) return true;
    held = 0;
    const bool ok = write();
    request.mutable_layers()->clear_layers();
    return ok;
  };
  return SendLayers({&attention}, attention.layers, options, nullptr,
                    [&](size_t, v1::LayerChunk& chunk) {
                      if (stats != nullptr) stats->bytes_sent += TensorBytes(chunk);
                      // The chunk, its tag and length in the batch.
                      const int64_t bytes = static_cast<int64_t>(chunk.ByteSizeLong()) + 8;
                      if (!batch || bytes >= target) {
                        if (!flush()) return false;
                        *request.mutable_layer() = std::move(chunk);
                        return write();
                      }
                      if (held > 0 && held + bytes > target && !flush()) return false;
                      *request.mutable_layers()->add_layers() = std::move(chunk);
                      held += bytes;
                      return true;
                    }) &&
         flush();
}

// Lends `message` to `request`'s field for one write, then takes it back:
// gRPC's sync Write serialises the request before it returns, so the stored
// message is read in place, never copied into the request. The request must
// not live on an arena (unsafe_arena_* then only moves the pointer).
template <typename Message, typename Request, typename Set, typename Release, typename Write>
bool WriteLent(const Message& message, Request& request, Set set, Release release, Write&& write) {
  (request.*set)(const_cast<Message*>(&message));
  const bool written = write(request);
  (request.*release)();
  return written;
}

// Writes a prepared pass's header and layer messages as stored, reusing
// `request` (ExplainRequest or StreamRequest); false when the call ended
// early. Counts the messages and tensor bytes written in *stats (may be null).
template <typename Request, typename Stream>
bool WritePrepared(Stream& stream, Request& request, const PreparedPass& pass, CallStats* stats) {
  auto write = [&](const Request& r) { return stream.Write(r); };
  if (!WriteLent(pass.header(), request, &Request::unsafe_arena_set_allocated_header,
                 &Request::unsafe_arena_release_header, write)) {
    return false;
  }
  if (stats != nullptr) ++stats->messages_sent;
  for (const v1::LayerChunk& chunk : pass.chunks()) {
    if (!WriteLent(chunk, request, &Request::unsafe_arena_set_allocated_layer,
                   &Request::unsafe_arena_release_layer, write)) {
      return false;
    }
    if (stats != nullptr) {
      stats->bytes_sent += TensorBytes(chunk);
      ++stats->messages_sent;
    }
  }
  return true;
}

}  // namespace

PreparedPass::PreparedPass(v1::PassHeader header, const AttentionView& attention,
                           const ExplainOptions& options)
    : header_(std::move(header)) {
  CompleteLayout(attention, header_.mutable_layout());
  // A constructor cannot refuse: kOn fuses when it can, as kAuto.
  absl::StatusOr<std::vector<FusedAttention>> fused = MaybeFuseHeads(
      &header_, {&attention},
      options.client_fusion == ClientFusion::kOff ? ClientFusion::kOff : ClientFusion::kAuto,
      options.wire, options.fusion_threads);
  heads_fused_on_client_ = fused.ok() && !fused->empty();
  const AttentionView& view = heads_fused_on_client_ ? (*fused)[0].view : attention;
  for (int64_t l = 0; l < view.layers; ++l) {
    for (v1::LayerChunk& chunk :
         LayerChunks(view, static_cast<int>(l), options.wire, options.max_message_bytes)) {
      chunks_.push_back(std::move(chunk));
    }
  }
  for (const v1::LayerChunk& chunk : chunks_) {
    tensor_bytes_ +=
        static_cast<int64_t>(chunk.attention().data().size() + chunk.gradient().data().size());
  }
}

PreparedPass::PreparedPass(v1::PassHeader header, std::vector<v1::LayerChunk> chunks)
    : header_(std::move(header)), chunks_(std::move(chunks)) {
  for (const v1::LayerChunk& chunk : chunks_) {
    tensor_bytes_ +=
        static_cast<int64_t>(chunk.attention().data().size() + chunk.gradient().data().size());
  }
}

namespace internal {

// A bidirectional call whose responses are read on a thread of its own from
// the start, handed to `on_response` there; the owner writes from its own
// thread (gRPC's sync API allows one reader and one writer at once).
template <typename Request, typename Response>
class BidiCall {
 public:
  using Stream = grpc::ClientReaderWriter<Request, Response>;

  // `open` starts the call on the given context (e.g. a stub method).
  // `on_done` (may be empty) runs on the reader thread once the call has
  // ended, after the last on_response.
  template <typename Open>
  BidiCall(absl::Duration timeout, Open&& open, std::function<void(Response&)> on_response,
           const char* name, std::function<void()> on_done = {})
      : name_(name) {
    ctx_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    stream_ = open(&ctx_);
    reader_ = std::thread(
        [this, on_response = std::move(on_response), on_done = std::move(on_done)] {
          Response response;
          while (stream_->Read(&response)) on_response(response);
          if (on_done) on_done();
        });
  }
  ~BidiCall() {
    if (!finished_) {
      ctx_.TryCancel();
      Finish().IgnoreError();
    }
  }

  // False once the call has ended, and for every write after that.
  bool Write(const Request& request) {
    if (!ended_ && !stream_->Write(request)) ended_ = true;
    return !ended_;
  }
  absl::Status WriteStatus(const Request& request) {
    return Write(request) ? absl::OkStatus() : Ended();
  }
  // The error of a write on an ended call.
  absl::Status Ended() const {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", name_, " call has ended; Finish() returns its status"));
  }

  // Half-closes, waits for the reader to see the end, returns the status.
  absl::Status Finish() {
    if (finished_) return status_;
    finished_ = true;
    ended_ = true;
    stream_->WritesDone();
    reader_.join();
    status_ = FromGrpcStatus(stream_->Finish());
    return status_;
  }

  void Cancel() { ctx_.TryCancel(); }

 private:
  const char* name_;
  grpc::ClientContext ctx_;
  std::unique_ptr<Stream> stream_;
  std::thread reader_;
  bool ended_ = false;
  bool finished_ = false;
  absl::Status status_;
};

}  // namespace internal

// ---- Audit --------------------------------------------------------------

struct AuditStream::Impl {
  // Before `call`: the reader thread, started by call's constructor, uses
  // them, and call's destructor joins it before they go.
  std::function<void(const v1::AuditItemResult&)> on_item;
  v1::AuditReport report;
  bool have_report = false;
  v1::AuditRequest request;  // reused across writes
  internal::BidiCall<v1::AuditRequest, v1::AuditResponse> call;

  Impl(v1::AttnrollService::Stub* stub, AuditOptions options)
      : on_item(std::move(options.on_item)),
        call(
            options.timeout, [stub](grpc::ClientContext* ctx) { return stub->Audit(ctx); },
            [this](v1::AuditResponse& response) {
              if (response.has_report()) {
                report = std::move(*response.mutable_report());
                have_report = true;
              } else if (response.has_item() && on_item) {
                on_item(response.item());
              }
            },
            "Audit") {}
};

AuditStream::AuditStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AuditStream::~AuditStream() = default;

std::unique_ptr<AuditStream> Client::Audit(const v1::AuditHeader& header, AuditOptions options) {
  std::unique_ptr<AuditStream> stream(
      new AuditStream(std::make_unique<AuditStream::Impl>(stub_.get(), std::move(options))));
  v1::AuditRequest& request = stream->impl_->request;
  *request.mutable_header() = header;
  stream->impl_->call.Write(request);  // a failure shows in Finish
  return stream;
}

absl::Status AuditStream::AddMaps(const std::string& id, const std::string& group,
                                  const v1::Tensor& baseline, const v1::Tensor& candidate) {
  v1::AuditItem* item = impl_->request.mutable_item();
  item->set_id(id);
  item->set_group(group);
  *item->mutable_baseline() = baseline;
  *item->mutable_candidate() = candidate;
  return impl_->call.WriteStatus(impl_->request);
}

absl::Status AuditStream::AddMaps(const std::string& id, const std::string& group,
                                  absl::Span<const float> baseline,
                                  absl::Span<const float> candidate) {
  v1::AuditItem* item = impl_->request.mutable_item();
  item->set_id(id);
  item->set_group(group);
  for (auto [map, tensor] : {std::pair{baseline, item->mutable_baseline()},
                             std::pair{candidate, item->mutable_candidate()}}) {
    tensor->Clear();
    tensor->set_dtype(v1::DTYPE_FP32);
    tensor->add_shape(static_cast<int64_t>(map.size()));
    AppendEncoded(v1::DTYPE_FP32, map.data(), map.size(), tensor->mutable_data());
  }
  return impl_->call.WriteStatus(impl_->request);
}

absl::Status AuditStream::AddPasses(const std::string& id, const std::string& group,
                                    v1::PassHeader pass_header, const AttentionView& baseline,
                                    const AttentionView& candidate, const ExplainOptions& options) {
  if (absl::Status same = CheckSameShape(baseline, candidate, absl::StrCat("item ", id, ": "));
      !same.ok()) {
    return same;
  }
  CompleteLayout(baseline, pass_header.mutable_layout());
  absl::StatusOr<std::vector<FusedAttention>> fused =
      MaybeFuseHeads(&pass_header, {&baseline, &candidate}, options.client_fusion, options.wire,
                     options.fusion_threads);
  if (!fused.ok()) return fused.status();
  const AttentionView& base = fused->empty() ? baseline : (*fused)[0].view;
  const AttentionView& cand = fused->empty() ? candidate : (*fused)[1].view;
  v1::AuditRequest& request = impl_->request;
  v1::AuditPassBegin* begin = request.mutable_pass_begin();
  begin->set_id(id);
  begin->set_group(group);
  *begin->mutable_pass() = std::move(pass_header);
  internal::BidiCall<v1::AuditRequest, v1::AuditResponse>& call = impl_->call;
  if (!call.Write(request)) return call.Ended();
  const bool sent = SendLayers({&base, &cand}, base.layers, options, nullptr,
                               [&](size_t side, v1::LayerChunk& chunk) {
                                 v1::AuditPassLayer* layer = request.mutable_pass_layer();
                                 layer->set_candidate(side == 1);
                                 *layer->mutable_layer() = std::move(chunk);
                                 return call.Write(request);
                               });
  if (!sent) return call.Ended();
  request.mutable_pass_end();
  return call.WriteStatus(request);
}

absl::StatusOr<v1::AuditReport> AuditStream::Finish() {
  if (absl::Status status = impl_->call.Finish(); !status.ok()) return status;
  if (!impl_->have_report) return absl::InternalError("the audit ended without a report");
  return impl_->report;
}

void AuditStream::Cancel() { impl_->call.Cancel(); }

// ---- ExplainStream ------------------------------------------------------

struct PassStream::Impl {
  // Before `call`, as in AuditStream::Impl.
  PassStreamOptions options;
  v1::StreamRequest request;  // reused across writes
  internal::BidiCall<v1::StreamRequest, v1::StreamResponse> call;

  Impl(v1::AttnrollService::Stub* stub, PassStreamOptions opts)
      : options(std::move(opts)),
        call(
            options.timeout, [stub](grpc::ClientContext* ctx) { return stub->ExplainStream(ctx); },
            [this](v1::StreamResponse& response) {
              const std::string& id = response.request_id();
              if (response.has_progress()) {
                if (options.on_progress) options.on_progress(id, response.progress());
              } else if (response.has_result()) {
                if (options.on_result) options.on_result(id, std::move(*response.mutable_result()));
              } else if (response.has_error()) {
                if (options.on_result) options.on_result(id, FromPassError(response.error()));
              }
            },
            "ExplainStream", options.on_done) {}

  v1::StreamRequest& Request(const std::string& request_id) {
    request.set_request_id(request_id);
    return request;
  }
};

PassStream::PassStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PassStream::~PassStream() = default;

std::unique_ptr<PassStream> Client::ExplainStream(PassStreamOptions options) {
  return std::unique_ptr<PassStream>(
      new PassStream(std::make_unique<PassStream::Impl>(stub_.get(), std::move(options))));
}

absl::Status PassStream::AddPass(const std::string& request_id, v1::PassHeader header,
                                 const AttentionView& attention, const ExplainOptions& options,
                                 CallStats* stats) {
  CompleteLayout(attention, header.mutable_layout());
  absl::StatusOr<std::vector<FusedAttention>> fused =
      MaybeFuseHeads(&header, {&attention}, options.client_fusion, options.wire,
                     options.fusion_threads);
  if (!fused.ok()) return fused.status();
  if (stats != nullptr) stats->heads_fused_on_client = !fused->empty();
  const AttentionView& view = fused->empty() ? attention : (*fused)[0].view;
  v1::StreamRequest& request = impl_->Request(request_id);
  if (!WritePass(impl_->call, request, std::move(header), view, options, stats)) {
    return impl_->call.Ended();
  }
  return EndPass(request_id);
}

absl::Status PassStream::AddPass(const std::string& request_id, const PreparedPass& pass,
                                 CallStats* stats) {
  v1::StreamRequest& request = impl_->Request(request_id);
  if (!WritePrepared(impl_->call, request, pass, stats)) return impl_->call.Ended();
  return EndPass(request_id);
}

absl::Status PassStream::BeginPass(const std::string& request_id, const v1::PassHeader& header) {
  v1::StreamRequest& request = impl_->Request(request_id);
  *request.mutable_header() = header;
  return impl_->call.WriteStatus(request);
}

absl::Status PassStream::AddLayer(const std::string& request_id, int layer,
                                  const AttentionView& layer_view, const ExplainOptions& options,
                                  CallStats* stats) {
  if (layer_view.layers != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pass ", request_id, ", layer ", layer, ": expected a view of one layer, got ",
        layer_view.layers));
  }
  v1::StreamRequest& request = impl_->Request(request_id);
  const bool sent = SendLayers({&layer_view}, 1, options, stats, [&](size_t, v1::LayerChunk& chunk) {
    chunk.set_layer(static_cast<uint32_t>(layer));
    *request.mutable_layer() = std::move(chunk);
    return impl_->call.Write(request);
  });
  return sent ? absl::OkStatus() : impl_->call.Ended();
}

absl::Status PassStream::EndPass(const std::string& request_id) {
  v1::StreamRequest& request = impl_->Request(request_id);
  request.mutable_end();
  return impl_->call.WriteStatus(request);
}

absl::Status PassStream::Finish() { return impl_->call.Finish(); }

void PassStream::Cancel() { impl_->call.Cancel(); }

absl::StatusOr<v1::ExplainResponse> Client::ExplainWithProgress(v1::PassHeader header,
                                                                const AttentionView& attention,
                                                                const ExplainOptions& options,
                                                                const ProgressFn& progress,
                                                                CallStats* stats) {
  const absl::Time start = absl::Now();
  const std::string id = header.request_id().empty() ? "pass" : header.request_id();
  // Written on the stream's reader thread; read after Finish has joined it.
  absl::StatusOr<v1::ExplainResponse> result =
      absl::InternalError("the stream ended without a result for the pass");
  PassStreamOptions stream_options;
  stream_options.timeout = options.timeout;
  stream_options.on_result = [&](const std::string&, absl::StatusOr<v1::ExplainResponse> r) {
    result = std::move(r);
  };
  stream_options.on_progress = [&](const std::string&, const v1::Progress& p) {
    if (progress) progress(p);
  };
  std::unique_ptr<PassStream> stream = ExplainStream(std::move(stream_options));
  CallStats local;
  // A failed write shows in Finish.
  stream->AddPass(id, std::move(header), attention, options, &local).IgnoreError();
  const absl::Status status = stream->Finish();
  local.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (stats != nullptr) *stats = local;
  if (!status.ok()) return status;
  return result;
}

// ---- Explain, ExplainEncoderDecoder, ExplainPair ------------------------

namespace {

// One client-streaming pass: `open(ctx, response)` starts a call (a stub
// method), `write(writer, stats)` sends the messages and returns false when
// the call ended early; then half-close, the response or the status. A call
// that ends UNAVAILABLE is made again, whole, up to `attempts` calls, after
// 0.1 s, 0.2 s, ... and within the one deadline. Fills *stats (may be null)
// with write's counts over every call, the sends, the last call's peer and
// the seconds of the whole.
template <typename Response, typename Open, typename Write>
absl::StatusOr<Response> ClientStreamingCall(absl::Duration timeout, int attempts, Open&& open,
                                             Write&& write, CallStats* stats) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  CallStats local;
  local.sends = 0;
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    Response response;
    auto writer = open(&ctx, &response);
    ++local.sends;
    if (write(*writer, &local)) writer->WritesDone();
    const grpc::Status status = writer->Finish();
    local.peer = ctx.peer();
    const bool again = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                       local.sends < attempts && absl::Now() + backoff < deadline;
    if (!again) {
      local.seconds = absl::ToDoubleSeconds(absl::Now() - start);
      if (stats != nullptr) *stats = local;
      if (!status.ok()) return FromGrpcStatus(status);
      return response;
    }
    absl::SleepFor(backoff);
    backoff *= 2;
  }
}

}  // namespace

absl::StatusOr<v1::ExplainResponse> Client::Explain(v1::PassHeader header,
                                                    const AttentionView& attention,
                                                    const ExplainOptions& options,
                                                    CallStats* stats) {
  CompleteLayout(attention, header.mutable_layout());
  absl::StatusOr<std::vector<FusedAttention>> fused =
      MaybeFuseHeads(&header, {&attention}, options.client_fusion, options.wire,
                     options.fusion_threads);
  if (!fused.ok()) return fused.status();
  const AttentionView& view = fused->empty() ? attention : (*fused)[0].view;
  absl::StatusOr<v1::ExplainResponse> response = ClientStreamingCall<v1::ExplainResponse>(
      options.timeout, pass_attempts_,
      [&](grpc::ClientContext* ctx, v1::ExplainResponse* r) { return stub_->Explain(ctx, r); },
      [&](grpc::ClientWriter<v1::ExplainRequest>& writer, CallStats* counts) {
        v1::ExplainRequest request;
        return WritePass(writer, request, header, view, options, counts);
      },
      stats);
  if (stats != nullptr) stats->heads_fused_on_client = !fused->empty();
  return response;
}

absl::StatusOr<v1::ExplainResponse> Client::Explain(const PreparedPass& pass,
                                                    absl::Duration timeout, CallStats* stats) {
  return ClientStreamingCall<v1::ExplainResponse>(
      timeout, pass_attempts_,
      [&](grpc::ClientContext* ctx, v1::ExplainResponse* r) { return stub_->Explain(ctx, r); },
      [&](grpc::ClientWriter<v1::ExplainRequest>& writer, CallStats* counts) {
        v1::ExplainRequest request;
        return WritePrepared(writer, request, pass, counts);
      },
      stats);
}

absl::StatusOr<v1::ExplainResponse> Client::ExplainEncoderDecoder(v1::PassHeader header,
                                                                  const EncoderDecoderView& stacks,
                                                                  const ExplainOptions& options,
                                                                  CallStats* stats) {
  v1::Layout* layout = header.mutable_layout();
  v1::EncoderDecoder* ed = layout->mutable_encoder_decoder();
  if (ed->encoder_layers() == 0) ed->set_encoder_layers(static_cast<uint32_t>(stacks.encoder.layers));
  if (ed->encoder_tokens() == 0) ed->set_encoder_tokens(static_cast<uint32_t>(stacks.encoder.tokens));
  if (ed->decoder_layers() == 0) ed->set_decoder_layers(static_cast<uint32_t>(stacks.decoder.layers));
  if (ed->decoder_tokens() == 0) ed->set_decoder_tokens(static_cast<uint32_t>(stacks.decoder.tokens));
  if (layout->num_heads() == 0) layout->set_num_heads(static_cast<uint32_t>(stacks.encoder.heads));
  if (layout->batch_size() == 0) layout->set_batch_size(static_cast<uint32_t>(stacks.encoder.batch));
  return ClientStreamingCall<v1::ExplainResponse>(
      options.timeout, pass_attempts_,
      [&](grpc::ClientContext* ctx, v1::ExplainResponse* r) { return stub_->Explain(ctx, r); },
      [&](grpc::ClientWriter<v1::ExplainRequest>& writer, CallStats* counts) {
        v1::ExplainRequest request;
        *request.mutable_header() = header;
        ++counts->messages_sent;
        // The encoder's layers, then each decoder layer's self- and
        // cross-attention; each view's messages tagged with its stack.
        auto send_as = [&](std::vector<v1::Stack> stack_of_view) {
          return [&, stack_of_view](size_t view, v1::LayerChunk& chunk) {
            chunk.set_stack(stack_of_view[view]);
            *request.mutable_layer() = std::move(chunk);
            return writer.Write(request);
          };
        };
        return writer.Write(request) &&
               SendLayers({&stacks.encoder}, stacks.encoder.layers, options, counts,
                          send_as({v1::STACK_ENCODER})) &&
               SendLayers({&stacks.decoder, &stacks.cross}, stacks.decoder.layers, options, counts,
                          send_as({v1::STACK_DECODER_SELF, v1::STACK_DECODER_CROSS}));
      },
      stats);
}

absl::StatusOr<v1::PairResponse> Client::ExplainPair(v1::PassHeader header,
                                                     const v1::CompareOptions& compare,
                                                     const AttentionView& baseline,
                                                     const AttentionView& candidate,
                                                     const ExplainOptions& options) {
  if (absl::Status same = CheckSameShape(baseline, candidate, ""); !same.ok()) return same;
  CompleteLayout(baseline, header.mutable_layout());
  absl::StatusOr<std::vector<FusedAttention>> fused =
      MaybeFuseHeads(&header, {&baseline, &candidate}, options.client_fusion, options.wire,
                     options.fusion_threads);
  if (!fused.ok()) return fused.status();
  const AttentionView& base = fused->empty() ? baseline : (*fused)[0].view;
  const AttentionView& cand = fused->empty() ? candidate : (*fused)[1].view;
  return ClientStreamingCall<v1::PairResponse>(
      options.timeout, pass_attempts_,
      [&](grpc::ClientContext* ctx, v1::PairResponse* r) { return stub_->ExplainPair(ctx, r); },
      [&](grpc::ClientWriter<v1::PairRequest>& writer, CallStats* counts) {
        v1::PairRequest request;
        *request.mutable_header()->mutable_pass() = header;
        *request.mutable_header()->mutable_compare() = compare;
        return writer.Write(request) &&
               SendLayers({&base, &cand}, base.layers, options, counts,
                          [&](size_t side, v1::LayerChunk& chunk) {
                            *(side == 0 ? request.mutable_baseline()
                                        : request.mutable_candidate()) = std::move(chunk);
                            return writer.Write(request);
                          });
      },
      nullptr);
}

}  // namespace attnroll::client
