// The messages of an Explain call, each parsed from the bytes the server
// would receive (an ExplainRequest: a header, then layer chunks, or the
// whole pass in one), driven
// through the pass exactly as ExplainReactor does: the header planned and
// started, each chunk checked, decoded (fp32, fp16, bf16) and folded in,
// Finish after the last message. The first refusal ends the call.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "attnroll/v1/attnroll.pb.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/fuzz/pass_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnroll;
  const std::vector<std::string> messages = fuzz::SplitMessages(data, size);
  fuzz::PassDriver driver;
  bool open = false, whole = false;
  for (const std::string& bytes : messages) {
    if (whole) return 0;  // a message after a whole pass
    const int64_t before = fuzz::PassDriver::Allocated();
    v1::ExplainRequest request;
    if (!request.ParseFromString(bytes)) return 0;  // INVALID_ARGUMENT: does not parse
    const int64_t message_bytes = fuzz::PassDriver::Allocated() - before;
    switch (request.message_case()) {
      case v1::ExplainRequest::kHeader:
        if (open) return 0;  // duplicate header
        if (!driver.Open(request.header())) return 0;
        open = true;
        break;
      case v1::ExplainRequest::kLayer:
        if (!open) return 0;  // a layer before the header
        if (!driver.Add(request.layer(), message_bytes)) return 0;
        break;
      case v1::ExplainRequest::kLayers:  // each chunk as if it came alone
        if (!open) return 0;
        for (const v1::LayerChunk& chunk : request.layers().layers()) {
          if (!driver.Add(chunk, message_bytes)) return 0;
        }
        break;
      case v1::ExplainRequest::kWholePass:  // the header, then each chunk as if it came alone
        if (open) return 0;  // only as the call's one message
        if (!driver.Open(request.whole_pass().header())) return 0;
        open = whole = true;
        // The message was allocated before Open: the driver's base counts it already.
        for (const v1::LayerChunk& chunk : request.whole_pass().layers()) {
          if (!driver.Add(chunk, 0)) return 0;
        }
        break;
      default:
        return 0;
    }
  }
  if (open) (void)driver.Finish();
  return 0;
}
