#include "server/runtime/refusal.h"

#include "absl/strings/cord.h"

namespace attnroll::runtime {
namespace {

constexpr char kPayload[] = "type.attnroll.dev/refusal";

absl::StatusCode CodeOf(Refusal reason) {
  switch (reason) {
    case Refusal::kIdle: return absl::StatusCode::kDeadlineExceeded;
    case Refusal::kAuth: return absl::StatusCode::kUnauthenticated;
    case Refusal::kShutdown: return absl::StatusCode::kUnavailable;
    default: return absl::StatusCode::kResourceExhausted;
  }
}

}  // namespace

const char* RefusalName(Refusal reason) {
  switch (reason) {
    case Refusal::kQueue: return "queue";
    case Refusal::kPasses: return "passes";
    case Refusal::kMemory: return "memory";
    case Refusal::kClientShare: return "client_share";
    case Refusal::kIdle: return "idle";
    case Refusal::kLimits: return "limits";
    case Refusal::kAuth: return "auth";
    case Refusal::kShutdown: return "shutdown";
  }
  return "limits";
}

absl::Status Refused(Refusal reason, absl::string_view message) {
  return WithRefusal(absl::Status(CodeOf(reason), message), reason);
}

absl::Status WithRefusal(absl::Status status, Refusal reason) {
  if (!status.ok()) status.SetPayload(kPayload, absl::Cord(RefusalName(reason)));
  return status;
}

std::optional<Refusal> RefusalOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kPayload);  // absl::optional<absl::Cord>
  if (!payload.has_value()) return std::nullopt;
  for (Refusal r : kAllRefusals) {
    if (*payload == RefusalName(r)) return r;
  }
  return std::nullopt;
}

}  // namespace attnroll::runtime
