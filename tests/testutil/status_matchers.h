// gtest matchers for absl::Status and absl::StatusOr<T>:
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("layer[0]")));
//   EXPECT_THAT(result, IsOk());
#ifndef ATTNROLL_TESTS_TESTUTIL_STATUS_MATCHERS_H_
#define ATTNROLL_TESTS_TESTUTIL_STATUS_MATCHERS_H_

#include <ostream>
#include <string>

#include <gmock/gmock.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnroll::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER_P2(StatusIs, code, message_matcher,
           std::string(negation ? "isn't" : "is") + " a status with code " +
               absl::StatusCodeToString(code) + " and a message that " +
               ::testing::DescribeMatcher<std::string>(message_matcher, negation)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.code() == code &&
         ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

MATCHER(IsOk, std::string(negation ? "isn't" : "is") + " OK") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "whose status is " << s;
  return s.ok();
}

}  // namespace attnroll::testing

#endif  // ATTNROLL_TESTS_TESTUTIL_STATUS_MATCHERS_H_
