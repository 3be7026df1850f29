#include "server/service/pass.h"

#include "server/service/encoder_decoder_session.h"
#include "server/service/pass_session.h"

namespace attnroll::service {

absl::StatusOr<std::unique_ptr<Pass>> CreatePass(const v1::PassHeader& header,
                                                 const PassLimits& limits, int threads) {
  if (!header.has_layout()) {
    return absl::InvalidArgumentError("header.layout: expected a layout, got none");
  }
  if (header.layout().has_encoder_decoder()) {
    absl::StatusOr<std::unique_ptr<EncoderDecoderSession>> s =
        EncoderDecoderSession::Create(header, limits);
    if (!s.ok()) return s.status();
    return std::unique_ptr<Pass>(std::move(*s));
  }
  absl::StatusOr<std::unique_ptr<PassSession>> s = PassSession::Create(header, limits, threads);
  if (!s.ok()) return s.status();
  return std::unique_ptr<Pass>(std::move(*s));
}

}  // namespace attnroll::service
