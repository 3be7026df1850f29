// The Compare request's checks without a server: a grid from the options,
// whose sides are each up to 2^32 - 1 (their product does not fit in a
// signed 64-bit integer), and the cost and shape errors around it.
#include "server/session/compare_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/pass_testutil.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::session {
namespace {

using testing::Fp32Tensor;
using testing::IsOk;
using testing::StatusIs;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

v1::CompareRequest Request(const std::vector<int64_t>& shape, uint32_t grid_h, uint32_t grid_w) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  std::vector<float> a(count), b(count);
  for (int64_t i = 0; i < count; ++i) {
    a[i] = static_cast<float>(i + 1);
    b[i] = static_cast<float>(count - i);
  }
  v1::CompareRequest r;
  *r.mutable_a() = Fp32Tensor(a, shape);
  *r.mutable_b() = Fp32Tensor(b, shape);
  r.mutable_options()->set_grid_height(grid_h);
  r.mutable_options()->set_grid_width(grid_w);
  return r;
}

TEST(CompareRequestTest, AGridWhoseCellCountOverflowsSigned64BitsIsRefusedByName) {
  // (2^32 - 1)^2 was computed in int64_t: undefined behaviour (UBSan's abort
  // in the sanitizer tree) before the refusal.
  const runtime::PassLimits limits;
  for (const auto& [h, w] : {std::pair<uint32_t, uint32_t>{0xffffffffu, 0xffffffffu}, {0xffffffffu, 0x80000001u}}) {
    const v1::CompareRequest r = Request({4}, h, w);
    const std::string message =
        absl::StrCat("options.grid: ", h, "x", w, " does not divide the 4 values of a [4]");
    EXPECT_THAT(CompareWorkingBytes(r, limits), StatusIs(kInvalid, message));
    EXPECT_THAT(RunCompare(r, limits), StatusIs(kInvalid, message));
  }
  // A grid larger than the maps, and one that fits.
  EXPECT_THAT(RunCompare(Request({2, 8}, 4, 8), limits),
              StatusIs(kInvalid, "options.grid: 4x8 does not divide the 16 values of a [2, 8]"));
  absl::StatusOr<v1::CompareResponse> fits = RunCompare(Request({2, 8}, 2, 4), limits);
  ASSERT_THAT(fits, IsOk());
  EXPECT_EQ(fits->comparisons_size(), 2);
}

TEST(CompareRequestTest, ToCompareSpecTakesOnlyAGridOfTheMapLength) {
  v1::CompareOptions o;
  o.set_grid_height(0xffffffffu);
  o.set_grid_width(0xffffffffu);
  EXPECT_THAT(ToCompareSpec(o, 1),
              StatusIs(kInvalid, "options.grid: 4294967295x4294967295 cells, expected 1 (the map length)"));
  o.set_grid_height(3);
  o.set_grid_width(5);
  absl::StatusOr<analysis::CompareSpec> spec = ToCompareSpec(o, 15);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->grid_h, 3);
  EXPECT_EQ(spec->grid_w, 5);
}

}  // namespace
}  // namespace attnroll::session
