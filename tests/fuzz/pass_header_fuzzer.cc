// A pass header as an Explain call's first message carries it: parsed from the
// wire, planned against the limits (PlanPass or PlanEncoderDecoderPass), and,
// when the plan is accepted, started (its state allocated) and finished
// without layers. The memory the started pass holds must stay within the
// plan's working_bytes, the figure admission reserves.
#include <cstddef>
#include <cstdint>

#include "absl/strings/match.h"
#include "attnroll/v1/attnroll.pb.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/pass_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnroll;
  v1::PassHeader header;
  if (!header.ParseFromArray(data, static_cast<int>(size))) return 0;
  fuzz::PassDriver driver;
  if (!driver.Open(header)) return 0;
  absl::StatusOr<v1::ExplainResponse> response = driver.Finish();
  fuzz::Require(!response.ok() && absl::StrContains(response.status().message(), "missing"),
                "a pass without layers does not finish");
  return 0;
}
