// A file the attnroll CLI reads, by content as ReadArrays does: a zip archive
// (PK...) as a .npz (ParseNpz, libzip reading the bytes in memory, every
// member parsed as a .npy), anything else as a .npy file (ParseNpy).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "client/npy/npy.h"
#include "tests/fuzz/fuzz_input.h"

namespace attnroll::fuzz {
namespace {

void CheckArray(const npy::Array& a) {
  uint64_t count = 1;
  for (int64_t d : a.shape) {
    Require(d >= 0, "a parsed array has no negative dimension");
    count *= static_cast<uint64_t>(d);
  }
  Require(count == a.values.size(), "a parsed array holds product(shape) values");
}

}  // namespace
}  // namespace attnroll::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnroll;
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (absl::StartsWith(bytes, "PK")) {
    absl::StatusOr<std::vector<npy::NamedArray>> arrays = npy::ParseNpz(bytes, "fuzz.npz");
    if (arrays.ok()) {
      for (const npy::NamedArray& a : *arrays) fuzz::CheckArray(a.second);
    } else {
      fuzz::Require(absl::StartsWith(arrays.status().message(), "fuzz.npz"), "errors name the file");
    }
    return 0;
  }
  absl::StatusOr<npy::Array> array = npy::ParseNpy(bytes, "fuzz.npy");
  if (array.ok()) {
    fuzz::CheckArray(*array);
  } else {
    fuzz::Require(absl::StartsWith(array.status().message(), "fuzz.npy"), "errors name the file");
  }
  return 0;
}
