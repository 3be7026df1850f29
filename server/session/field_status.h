// The error vocabulary of the API. Every refusal names the field (a path into
// the request, e.g. "analyses[0].rollout.fusion"), what was expected and what
// arrived: "analyses[0].rollout.fusion: expected MEAN, ..., got 42". Errors
// from a nested part are annotated on the way out with the helpers below
// (never rebuilt by string surgery); the code is always kept.
#ifndef ATTNROLL_SERVER_SESSION_FIELD_STATUS_H_
#define ATTNROLL_SERVER_SESSION_FIELD_STATUS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "attnroll/v1/pass.pb.h"

namespace attnroll::session {

// A nested field's error under its parent's path:
// InField("analyses[2]", "rollout.fusion: ...") -> "analyses[2].rollout.fusion: ...".
absl::Status InField(absl::string_view path, const absl::Status& status);

// An error located in a part of the request that is not a field path:
// At("item \"cat\"", "a.shape: ...") -> "item \"cat\": a.shape: ...".
absl::Status At(absl::string_view where, const absl::Status& status);

// An error qualified by whose it is, read as one phrase:
// Whose("candidate", "attention (layer 0, ...): ...") -> "candidate attention (layer 0, ...): ...".
absl::Status Whose(absl::string_view owner, const absl::Status& status);

// A count a client declares (layers, heads, tokens, batch): INVALID_ARGUMENT
// when 0, RESOURCE_EXHAUSTED above the server's limit; messages name `field`.
absl::Status CheckCount(absl::string_view field, uint64_t value, uint64_t limit);

// The in-band error of a multiplexed stream or an audit item, and back.
v1::PassError ToPassError(const absl::Status& status);
absl::Status FromPassError(const v1::PassError& error);

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_FIELD_STATUS_H_
