// A memory file: readable by its path, replaced atomically (a reader that
// opened it before keeps its bytes), never on disk.
#include "server/rpc/memory_file.h"

#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testutil/status_matchers.h"

namespace attnroll::rpc {
namespace {

using ::testing::StartsWith;
using testing::IsOk;

std::string ReadAll(std::ifstream& in) {
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

TEST(MemoryFileTest, ReadableByPathAndReplacedAtomically) {
  absl::StatusOr<std::unique_ptr<MemoryFile>> f = MemoryFile::Create("attnroll-test", "first");
  ASSERT_THAT(f.status(), IsOk());
  EXPECT_THAT((*f)->path(), StartsWith("/proc/self/fd/"));
  std::ifstream before((*f)->path());
  ASSERT_TRUE(before.good());
  ASSERT_THAT((*f)->Replace(std::string(100000, 'x') + "second"), IsOk());
  // Opened before: the old bytes, whole. Opened after: the new ones.
  EXPECT_EQ(ReadAll(before), "first");
  std::ifstream after((*f)->path());
  EXPECT_EQ(ReadAll(after), std::string(100000, 'x') + "second");
  ASSERT_THAT((*f)->Replace(""), IsOk());
  std::ifstream empty((*f)->path());
  EXPECT_EQ(ReadAll(empty), "");
}

}  // namespace
}  // namespace attnroll::rpc
