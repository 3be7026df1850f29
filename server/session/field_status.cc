#include "server/session/field_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/runtime/refusal.h"

namespace attnroll::session {
namespace {

absl::Status Prefixed(const absl::Status& status, absl::string_view prefix,
                      absl::string_view separator) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(prefix, separator, status.message()));
  // Payloads (a refusal's reason) travel with the annotated status.
  status.ForEachPayload([&out](absl::string_view type, const absl::Cord& payload) {
    out.SetPayload(type, payload);
  });
  return out;
}

}  // namespace

absl::Status InField(absl::string_view path, const absl::Status& status) {
  return Prefixed(status, path, ".");
}

absl::Status At(absl::string_view where, const absl::Status& status) {
  return Prefixed(status, where, ": ");
}

absl::Status Whose(absl::string_view owner, const absl::Status& status) {
  return Prefixed(status, owner, " ");
}

absl::Status CheckCount(absl::string_view field, uint64_t value, uint64_t limit) {
  if (value < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": expected 1 <= value <= ", limit, ", got ", value));
  }
  if (value > limit) {
    return runtime::Refused(runtime::Refusal::kLimits, 
        absl::StrCat(field, ": ", value, " exceeds the server limit of ", limit));
  }
  return absl::OkStatus();
}

v1::PassError ToPassError(const absl::Status& status) {
  v1::PassError error;
  error.set_code(static_cast<int>(status.code()));
  error.set_code_name(absl::StatusCodeToString(status.code()));
  error.set_message(std::string(status.message()));
  return error;
}

absl::Status FromPassError(const v1::PassError& error) {
  // Codes arrive from our own server; anything else is kept as UNKNOWN.
  const int code = error.code();
  const absl::StatusCode c = code >= 0 && code <= static_cast<int>(absl::StatusCode::kUnauthenticated) ? static_cast<absl::StatusCode>(code)
                                                     : absl::StatusCode::kUnknown;
  return absl::Status(c, error.message());
}

}  // namespace attnroll::session
