#include "server/rpc/pair_reactor.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "proto/cpp/grpc_status.h"
#include "server/rpc/proto_io.h"
#include "server/runtime/refusal.h"
#include "server/session/compare_request.h"
#include "server/session/field_status.h"

namespace attnroll::rpc {
namespace {

constexpr char kRpc[] = "ExplainPair";

// The first analysis's maps are compared map by map: it must give one map
// per read-out row.
absl::Status CheckComparable(const v1::PassHeader& header) {
  if (header.analyses_size() == 0) return absl::OkStatus();  // the default rollout
  const v1::Analysis& a = header.analyses(0);
  if (a.has_validate()) {
    return absl::InvalidArgumentError(
        "header.pass.analyses[0]: ExplainPair compares the first analysis's maps; validate gives none");
  }
  if (a.has_rollout() && a.rollout().per_layer()) {
    return absl::InvalidArgumentError(
        "header.pass.analyses[0].rollout.per_layer: ExplainPair compares one map per row; expected "
        "false, got true");
  }
  if (a.has_rollout() && a.rollout().fusion() == v1::HEAD_FUSION_NONE) {
    return absl::InvalidArgumentError(
        "header.pass.analyses[0].rollout.fusion: ExplainPair compares one map per row; expected MEAN, "
        "MAX, MIN or WEIGHTED, got NONE");
  }
  return absl::OkStatus();
}

}  // namespace

PairReactor::PairReactor(grpc::CallbackServerContext* call, grpc::ByteBuffer* response,
                         ServiceContext* ctx)
    : call_(call), response_(response), ctx_(ctx), state_(ctx, call, kRpc) {
  if (!state_.authenticated().ok()) {
    End(state_.authenticated());
    return;
  }
  if (ctx_->shutting_down.load()) {
    End(runtime::Refused(runtime::Refusal::kShutdown, "server: shutting down, not accepting new passes"));
    return;
  }
  ReadNext();
}

void PairReactor::ReadNext() {
  state_.ArmIdle(state_.idle_timeout());
  StartRead(&buffer_);
}

void PairReactor::OnReadDone(bool ok) {
  const Reaction reaction = TookRead();
  state_.DisarmIdle();
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the pair"));
  if (!ok) {
    if (!baseline_.open()) {
      return End(absl::InvalidArgumentError("header: expected a PairHeader first, the stream ended without one"));
    }
    const bool long_finish = baseline_.session->long_finish();
    return Submit(long_finish ? runtime::Lane::kLong : runtime::Lane::kStep, &PairReactor::Complete);
  }
  ++messages_;
  Submit(baseline_.open() ? runtime::Lane::kStep : runtime::Lane::kNew, &PairReactor::HandleMessage);
}

void PairReactor::Submit(runtime::Lane lane, void (PairReactor::*step)()) {
  if (absl::Status s = ctx_->pool->Submit(lane, [this, step] { (this->*step)(); }); !s.ok()) End(s);
}

void PairReactor::HandleMessage() {
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the pair"));
  if (absl::Status s = ParseMessage(buffer_, messages_, "PairRequest", &request_); !s.ok()) return End(s);
  switch (request_.message_case()) {
    case v1::PairRequest::kHeader: {
      if (baseline_.open()) {
        return End(absl::InvalidArgumentError("header: duplicate: a PairHeader was already received"));
      }
      if (absl::Status s = CheckComparable(request_.header().pass()); !s.ok()) return End(s);
      header_ = request_.header().pass();
      state_.SetRequestId(header_.request_id());
      compare_ = request_.header().compare();
      const v1::Layout& layout = header_.layout();
      if (compare_.grid_height() == 0 && layout.grid().height() != 0) {
        compare_.set_grid_height(layout.grid().height());
        compare_.set_grid_width(layout.grid().width());
      }
      // The baseline, then (when it is open) the candidate.
      return OpenPassAsync(*ctx_, header_, kRpc, state_.Request(1, "the baseline pass"),
                           [this](absl::StatusOr<OpenPass> pass) { Opened(&baseline_, std::move(pass)); });
    }
    case v1::PairRequest::kBaseline:
    case v1::PairRequest::kCandidate: {
      const bool base = request_.has_baseline();
      OpenPass& side = base ? baseline_ : candidate_;
      if (!side.open()) {
        return End(absl::InvalidArgumentError("header: expected a PairHeader first, got a layer"));
      }
      const v1::LayerChunk& chunk = base ? request_.baseline() : request_.candidate();
      if (absl::Status s = AddChunk(*ctx_, side, chunk); !s.ok()) {
        return End(session::Whose(base ? "baseline" : "candidate", s));
      }
      break;
    }
    default:
      return End(absl::InvalidArgumentError(absl::StrCat(
          "message ", messages_, ": expected a header or a layer of one side, got neither")));
  }
  request_.Clear();
  ReadNext();
}

void PairReactor::Opened(OpenPass* side, absl::StatusOr<OpenPass> pass) {
  if (!pass.ok()) return End(pass.status());
  *side = *std::move(pass);
  if (side == &baseline_) {
    return OpenPassAsync(*ctx_, header_, kRpc, state_.Request(1, "the candidate pass"),
                         [this](absl::StatusOr<OpenPass> p) { Opened(&candidate_, std::move(p)); });
  }
  request_.Clear();
  ReadNext();
}

void PairReactor::Complete() {
  if (call_->IsCancelled()) return End(state_.CancelledStatus("the pair"));
  v1::PairResponse response;
  const session::FinishContext finish = MakeFinishContext(*ctx_, call_);
  for (const auto& [name, side, out] :
       {std::tuple<const char*, OpenPass*, v1::ExplainResponse*>{"baseline", &baseline_, response.mutable_baseline()},
        {"candidate", &candidate_, response.mutable_candidate()}}) {
    absl::StatusOr<v1::ExplainResponse> r = side->session->Finish(finish);
    if (!r.ok()) return End(call_->IsCancelled() ? state_.CancelledStatus("the pair") : session::Whose(name, r.status()));
    ctx_->metrics->Compute(side->session->kind(), r->timing().compute_seconds());
    *out = std::move(*r);
  }
  // Compare the first analysis's maps, sequence by sequence, map by map,
  // within the memory budget.
  const v1::AnalysisResult& a = response.baseline().results(0);
  const v1::AnalysisResult& b = response.candidate().results(0);
  for (int s = 0; s < a.maps_size(); ++s) {
    v1::CompareRequest request;
    *request.mutable_a() = a.maps(s);
    *request.mutable_b() = b.maps(s);
    *request.mutable_options() = compare_;
    const std::string where = absl::StrCat("compare (sequence ", s, ")");
    absl::StatusOr<int64_t> bytes = session::CompareWorkingBytes(request, ctx_->config.limits);
    if (!bytes.ok()) return End(session::At(where, bytes.status()));
    runtime::Admission::Request memory = state_.Request(0, "the comparison");
    memory.bytes = *bytes;
    absl::StatusOr<runtime::Admission::Ticket> ticket = ctx_->admission->TryAdmit(memory);
    if (!ticket.ok()) return End(session::At(where, ticket.status()));
    const absl::Time start = absl::Now();
    absl::StatusOr<v1::CompareResponse> c = session::RunCompare(request, ctx_->config.limits, finish.cancelled);
    ctx_->metrics->Compute("compare", absl::ToDoubleSeconds(absl::Now() - start));
    if (!c.ok()) return End(session::At(where, c.status()));
    for (v1::Comparison& one : *c->mutable_comparisons()) *response.add_comparisons() = std::move(one);
  }
  SerializeMessage(response, response_);
  End(absl::OkStatus());
}

void PairReactor::End(const absl::Status& status) {
  for (OpenPass* side : {&baseline_, &candidate_}) ClosePass(*ctx_, *side, kRpc, status);
  state_.Ended(status);
  Finish(ToGrpcStatus(status));
}

}  // namespace attnroll::rpc
