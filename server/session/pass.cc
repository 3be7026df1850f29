#include "server/session/pass.h"

#include "server/session/encoder_decoder_session.h"
#include "server/session/pass_session.h"

namespace attnroll::session {

int64_t PlannedPass::working_bytes() const {
  return std::visit([](const auto& plan) { return plan.working_bytes; }, plan_);
}

std::unique_ptr<Pass> PlannedPass::Start() && {
  if (auto* single = std::get_if<PassPlan>(&plan_)) {
    return std::make_unique<PassSession>(std::move(*single));
  }
  return std::make_unique<EncoderDecoderSession>(std::move(std::get<EncoderDecoderPlan>(plan_)));
}

absl::StatusOr<PlannedPass> PlanFromHeader(const v1::PassHeader& header,
                                           const runtime::PassLimits& limits, int threads) {
  if (!header.has_layout()) {
    return absl::InvalidArgumentError("header.layout: expected a layout, got none");
  }
  if (header.layout().has_encoder_decoder()) {
    absl::StatusOr<EncoderDecoderPlan> plan = PlanEncoderDecoderPass(header, limits);
    if (!plan.ok()) return plan.status();
    return PlannedPass(std::move(*plan));
  }
  absl::StatusOr<PassPlan> plan = PlanPass(header, limits, threads);
  if (!plan.ok()) return plan.status();
  return PlannedPass(std::move(*plan));
}

}  // namespace attnroll::session
