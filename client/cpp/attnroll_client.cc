#include "client/cpp/attnroll_client.h"

#include <algorithm>

#include "client/cpp/tensor_encode.h"

namespace attnroll::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : stub_(v1::AttnrollService::NewStub(std::move(channel))) {}

std::unique_ptr<Client> Client::Connect(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return std::make_unique<Client>(
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
}

absl::StatusOr<v1::ServerInfo> Client::GetServerInfo(absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::ServerInfo info;
  grpc::Status status = stub_->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info);
  if (!status.ok()) return FromGrpcStatus(status);
  return info;
}

absl::StatusOr<v1::CompareResponse> Client::Compare(const v1::CompareRequest& request,
                                                    absl::Duration timeout) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::CompareResponse response;
  grpc::Status status = stub_->Compare(&ctx, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
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

// Writes the header, then every layer, reusing `request` (ExplainRequest or
// StreamRequest); false when the server ended the call early (its Finish
// says why).
template <typename Request, typename Stream>
bool WritePass(Stream& stream, Request& request, v1::PassHeader header,
               const AttentionView& attention, const ExplainOptions& options, CallStats* stats) {
  *request.mutable_header() = std::move(header);
  ++stats->messages_sent;
  if (!stream.Write(request)) return false;
  for (int64_t l = 0; l < attention.layers; ++l) {
    for (v1::LayerChunk& chunk :
         LayerChunks(attention, static_cast<int>(l), options.wire, options.max_message_bytes)) {
      stats->bytes_sent +=
          static_cast<int64_t>(chunk.attention().data().size() + chunk.gradient().data().size());
      *request.mutable_layer() = std::move(chunk);
      ++stats->messages_sent;
      if (!stream.Write(request)) return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<v1::ExplainResponse> Client::ExplainWithProgress(v1::PassHeader header,
                                                                const AttentionView& attention,
                                                                const ExplainOptions& options,
                                                                const ProgressFn& progress,
                                                                CallStats* stats) {
  const absl::Time start = absl::Now();
  CompleteLayout(attention, header.mutable_layout());
  const std::string id = header.request_id().empty() ? "pass" : header.request_id();
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  auto stream = stub_->ExplainStream(&ctx);
  CallStats local;
  v1::StreamRequest request;
  request.set_request_id(id);
  if (WritePass(*stream, request, std::move(header), attention, options, &local)) {
    request.mutable_end();
    stream->Write(request);
    stream->WritesDone();
  }
  absl::StatusOr<v1::ExplainResponse> result =
      absl::InternalError("the stream ended without a result for the pass");
  v1::StreamResponse response;
  while (stream->Read(&response)) {
    if (response.has_progress()) {
      if (progress) progress(response.progress());
    } else if (response.has_result()) {
      result = std::move(*response.mutable_result());
    } else if (response.has_error()) {
      result = absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                            response.error().message());
    }
  }
  grpc::Status status = stream->Finish();
  local.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (stats != nullptr) *stats = local;
  if (!status.ok()) return FromGrpcStatus(status);
  return result;
}

absl::StatusOr<v1::ExplainResponse> Client::ExplainEncoderDecoder(v1::PassHeader header,
                                                                  const EncoderDecoderView& stacks,
                                                                  const ExplainOptions& options,
                                                                  CallStats* stats) {
  const absl::Time start = absl::Now();
  v1::Layout* layout = header.mutable_layout();
  v1::EncoderDecoder* ed = layout->mutable_encoder_decoder();
  if (ed->encoder_layers() == 0) ed->set_encoder_layers(static_cast<uint32_t>(stacks.encoder.layers));
  if (ed->encoder_tokens() == 0) ed->set_encoder_tokens(static_cast<uint32_t>(stacks.encoder.tokens));
  if (ed->decoder_layers() == 0) ed->set_decoder_layers(static_cast<uint32_t>(stacks.decoder.layers));
  if (ed->decoder_tokens() == 0) ed->set_decoder_tokens(static_cast<uint32_t>(stacks.decoder.tokens));
  if (layout->num_heads() == 0) layout->set_num_heads(static_cast<uint32_t>(stacks.encoder.heads));
  if (layout->batch_size() == 0) layout->set_batch_size(static_cast<uint32_t>(stacks.encoder.batch));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  v1::ExplainResponse response;
  auto writer = stub_->Explain(&ctx, &response);
  CallStats local;
  v1::ExplainRequest request;
  *request.mutable_header() = std::move(header);
  ++local.messages_sent;
  bool open = writer->Write(request);
  auto send = [&](const AttentionView& view, v1::Stack stack, int layer) {
    for (v1::LayerChunk& chunk : LayerChunks(view, layer, options.wire, options.max_message_bytes)) {
      chunk.set_stack(stack);
      local.bytes_sent +=
          static_cast<int64_t>(chunk.attention().data().size() + chunk.gradient().data().size());
      *request.mutable_layer() = std::move(chunk);
      ++local.messages_sent;
      if (!(open = writer->Write(request))) return;
    }
  };
  for (int l = 0; open && l < stacks.encoder.layers; ++l) send(stacks.encoder, v1::STACK_ENCODER, l);
  for (int l = 0; open && l < stacks.decoder.layers; ++l) {
    send(stacks.decoder, v1::STACK_DECODER_SELF, l);
    if (open) send(stacks.cross, v1::STACK_DECODER_CROSS, l);
  }
  if (open) writer->WritesDone();
  grpc::Status status = writer->Finish();
  local.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (stats != nullptr) *stats = local;
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::ExplainResponse> Client::Explain(v1::PassHeader header,
                                                    const AttentionView& attention,
                                                    const ExplainOptions& options,
                                                    CallStats* stats) {
  const absl::Time start = absl::Now();
  CompleteLayout(attention, header.mutable_layout());

  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  v1::ExplainResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::ExplainRequest>> writer = stub_->Explain(&ctx, &response);
  CallStats local;
  v1::ExplainRequest request;
  if (WritePass(*writer, request, std::move(header), attention, options, &local)) {
    writer->WritesDone();
  }
  grpc::Status status = writer->Finish();
  local.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (stats != nullptr) *stats = local;
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::PairResponse> Client::ExplainPair(v1::PassHeader header,
                                                     const v1::CompareOptions& compare,
                                                     const AttentionView& baseline,
                                                     const AttentionView& candidate,
                                                     const ExplainOptions& options) {
  CompleteLayout(baseline, header.mutable_layout());
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  v1::PairResponse response;
  auto writer = stub_->ExplainPair(&ctx, &response);
  v1::PairRequest request;
  *request.mutable_header()->mutable_pass() = std::move(header);
  *request.mutable_header()->mutable_compare() = compare;
  bool open = writer->Write(request);
  // Layer by layer, baseline then candidate.
  for (int64_t l = 0; open && l < baseline.layers; ++l) {
    for (const AttentionView* view : {&baseline, &candidate}) {
      for (v1::LayerChunk& chunk :
           LayerChunks(*view, static_cast<int>(l), options.wire, options.max_message_bytes)) {
        *(view == &baseline ? request.mutable_baseline() : request.mutable_candidate()) =
            std::move(chunk);
        if (!(open = writer->Write(request))) break;
      }
      if (!open) break;
    }
  }
  if (open) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

}  // namespace attnroll::client
