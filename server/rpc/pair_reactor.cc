#include "server/rpc/pair_reactor.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "proto/cpp/grpc_status.h"
#include "server/session/compare_request.h"
#include "server/session/field_status.h"

namespace attnroll::rpc {

PairReactor::PairReactor(grpc::CallbackServerContext* call, v1::PairResponse* response,
                         ServiceContext* ctx)
    : call_(call), response_(response), ctx_(ctx) {
  StartRead(&request_);
}

void PairReactor::OnReadDone(bool ok) {
  if (call_->IsCancelled()) return End(absl::CancelledError("pair cancelled"));
  if (!ok && !baseline_.open()) {
    return End(absl::InvalidArgumentError("header: expected a PairHeader first, got none"));
  }
  Submit(ok ? &PairReactor::HandleMessage : &PairReactor::Complete);
}

void PairReactor::Submit(void (PairReactor::*step)()) {
  if (absl::Status s = ctx_->pool->Submit([this, step] { (this->*step)(); }); !s.ok()) End(s);
}

void PairReactor::HandleMessage() {
  if (call_->IsCancelled()) return End(absl::CancelledError("pair cancelled"));
  switch (request_.message_case()) {
    case v1::PairRequest::kHeader: {
      if (baseline_.open()) {
        return End(absl::InvalidArgumentError("header: duplicate PairHeader"));
      }
      for (OpenPass* side : {&baseline_, &candidate_}) {
        absl::StatusOr<OpenPass> pass = OpenPassFromHeader(*ctx_, request_.header().pass());
        if (!pass.ok()) return End(pass.status());
        *side = std::move(*pass);
      }
      compare_ = request_.header().compare();
      const v1::Layout& layout = request_.header().pass().layout();
      if (compare_.grid_height() == 0 && layout.grid().height() != 0) {
        compare_.set_grid_height(layout.grid().height());
        compare_.set_grid_width(layout.grid().width());
      }
      break;
    }
    case v1::PairRequest::kBaseline:
    case v1::PairRequest::kCandidate: {
      const bool base = request_.has_baseline();
      OpenPass& side = base ? baseline_ : candidate_;
      if (!side.open()) {
        return End(absl::InvalidArgumentError("header: expected a PairHeader first, got a layer"));
      }
      const v1::LayerChunk& chunk = base ? request_.baseline() : request_.candidate();
      ctx_->metrics->AttentionBytes(chunk.attention().data().size());
      if (absl::Status s = side.session->AddChunk(chunk); !s.ok()) {
        return End(session::Whose(base ? "baseline" : "candidate", s));
      }
      break;
    }
    default:
      return End(absl::InvalidArgumentError("message: expected a header or a layer of one side"));
  }
  request_.Clear();
  StartRead(&request_);
}

void PairReactor::Complete() {
  if (call_->IsCancelled()) return End(absl::CancelledError("pair cancelled"));
  const session::FinishContext finish = MakeFinishContext(*ctx_, call_);
  for (const auto& [name, side, out] :
       {std::tuple<const char*, OpenPass*, v1::ExplainResponse*>{"baseline", &baseline_, response_->mutable_baseline()},
        {"candidate", &candidate_, response_->mutable_candidate()}}) {
    absl::StatusOr<v1::ExplainResponse> r = side->session->Finish(finish);
    if (!r.ok()) return End(session::Whose(name, r.status()));
    *out = std::move(*r);
  }
  // Compare the first analysis's maps, sequence by sequence, map by map.
  const v1::AnalysisResult& a = response_->baseline().results(0);
  const v1::AnalysisResult& b = response_->candidate().results(0);
  for (int s = 0; s < a.maps_size(); ++s) {
    v1::CompareRequest request;
    *request.mutable_a() = a.maps(s);
    *request.mutable_b() = b.maps(s);
    *request.mutable_options() = compare_;
    absl::StatusOr<v1::CompareResponse> c = session::RunCompare(request, ctx_->config.limits);
    if (!c.ok()) return End(session::At(absl::StrCat("compare (sequence ", s, ")"), c.status()));
    for (v1::Comparison& one : *c->mutable_comparisons()) *response_->add_comparisons() = std::move(one);
  }
  End(absl::OkStatus());
}

void PairReactor::End(const absl::Status& status) {
  for (OpenPass* side : {&baseline_, &candidate_}) ClosePass(*ctx_, *side, "ExplainPair", status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
