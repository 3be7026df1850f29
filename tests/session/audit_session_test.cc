// An audit's header without a server: the map length, given or taken from the
// options' grid (each side up to 2^32 - 1), against the server's limit.
#include "server/session/audit_session.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/runtime/refusal.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::session {
namespace {

using testing::IsOk;
using testing::StatusIs;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kExhausted = absl::StatusCode::kResourceExhausted;

v1::AuditHeader GridHeader(uint32_t h, uint32_t w, uint32_t map_length = 0) {
  v1::AuditHeader header;
  header.set_map_length(map_length);
  header.mutable_compare()->set_grid_height(h);
  header.mutable_compare()->set_grid_width(w);
  return header;
}

TEST(AuditSessionTest, AGridBeyondTheLimitIsRefusedNamingTheGrid) {
  // The cell count was computed in int64_t: (2^32 - 1)^2 overflowed
  // (undefined behaviour) and came out negative, refused as "got neither".
  const runtime::PassLimits limits;  // max_tokens 8192
  absl::StatusOr<std::unique_ptr<AuditSession>> huge = AuditSession::Create(GridHeader(0xffffffffu, 0xffffffffu), limits);
  EXPECT_THAT(huge, StatusIs(kExhausted, "header.compare.grid: 4294967295x4294967295 = 18446744065119617025 cells "
                                         "exceed the server limit of max_tokens^2 = 67108864"));
  EXPECT_EQ(runtime::RefusalOf(huge.status()), runtime::Refusal::kLimits);
  EXPECT_THAT(AuditSession::Create(GridHeader(8193, 8192), limits),
              StatusIs(kExhausted, "header.compare.grid: 8193x8192 = 67117056 cells exceed the server "
                                   "limit of max_tokens^2 = 67108864"));
  EXPECT_THAT(AuditSession::Create(GridHeader(0, 0, 0xffffffffu), limits),
              StatusIs(kExhausted, "header.map_length: 4294967295 exceeds the server limit of max_tokens^2"));
  EXPECT_THAT(AuditSession::Create(GridHeader(0, 0), limits),
              StatusIs(kInvalid, "header.map_length: expected the map length, or a grid in header.compare, got neither"));
  // A given length and a grid that disagree; a grid alone.
  EXPECT_THAT(AuditSession::Create(GridHeader(0xffffffffu, 0xffffffffu, 16), limits),
              StatusIs(kInvalid, "header.compare.options.grid: 4294967295x4294967295 cells, expected 16 (the map "
                                 "length)"));
  EXPECT_THAT(AuditSession::Create(GridHeader(4, 4), limits), IsOk());
}

}  // namespace
}  // namespace attnroll::session
