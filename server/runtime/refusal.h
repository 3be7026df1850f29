// Why a pass or call was turned away, from a fixed set (bounded metric
// labels). A refusal is an absl::Status with its reason attached as a
// payload, so the one place that ends a call can count it by reason
// (attnroll_refusals_total{reason}) and log it, whoever refused it.
#ifndef ATTNROLL_SERVER_RUNTIME_REFUSAL_H_
#define ATTNROLL_SERVER_RUNTIME_REFUSAL_H_

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnroll::runtime {

enum class Refusal {
  kQueue,        // the queue of new work was full, or the wait for room ran out
  kPasses,       // max_passes_in_flight reached
  kMemory,       // the memory budget
  kClientShare,  // the client's share of passes or memory
  kIdle,         // nothing arrived for the idle timeout
  kLimits,       // a per-pass or per-call limit (sizes, counts, costs)
  kAuth,         // not authenticated
  kShutdown,     // the server is shutting down
};
inline constexpr Refusal kAllRefusals[] = {Refusal::kQueue,  Refusal::kPasses, Refusal::kMemory,
                                           Refusal::kClientShare, Refusal::kIdle, Refusal::kLimits,
                                           Refusal::kAuth,   Refusal::kShutdown};

// "queue", "passes", "memory", "client_share", "idle", "limits", "auth", "shutdown".
const char* RefusalName(Refusal reason);

// The status of a refusal: RESOURCE_EXHAUSTED (queue, passes, memory,
// client_share, limits), DEADLINE_EXCEEDED (idle), UNAUTHENTICATED (auth) or
// UNAVAILABLE (shutdown), with `message` and the reason attached.
absl::Status Refused(Refusal reason, absl::string_view message);
// `status` (not OK) with `reason` attached; its code and message kept.
absl::Status WithRefusal(absl::Status status, Refusal reason);
// The reason attached to `status`, if any.
std::optional<Refusal> RefusalOf(const absl::Status& status);

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_REFUSAL_H_
