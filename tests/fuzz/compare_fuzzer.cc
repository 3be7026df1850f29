// A Compare call's one message, parsed from the bytes the server would
// receive, and handled as CompareReactor does: validated and costed
// (CompareWorkingBytes), then, when accepted, compared (RunCompare).
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "attnroll/v1/audit.pb.h"
#include "server/session/compare_request.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnroll;
  v1::CompareRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<int64_t> bytes = session::CompareWorkingBytes(request, fuzz::Limits());
  if (!bytes.ok()) {
    fuzz::Require(!bytes.status().message().empty(), "a refused comparison says why");
    return 0;
  }
  fuzz::Require(*bytes > 0, "an accepted comparison reserves memory");
  absl::StatusOr<v1::CompareResponse> response = session::RunCompare(request, fuzz::Limits());
  if (response.ok()) {
    fuzz::Require(response->comparisons_size() > 0, "an accepted comparison compares");
  } else {
    fuzz::Require(!response.status().message().empty(), "a refused comparison says why");
  }
  return 0;
}
