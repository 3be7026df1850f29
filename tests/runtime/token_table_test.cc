// The token file: its format, every refusal naming the line (never the
// token), look-ups of each entry, and reloading that keeps the tokens in use
// when the new file is bad.
#include "server/runtime/token_table.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::runtime {
namespace {

using ::attnroll::testing::IsOk;
using ::attnroll::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlice[] = "alice-token-0123456789";
constexpr char kAlice2[] = "alice-second-token-abcdef";
constexpr char kBob[] = "bob-token-9876543210xyz";

TEST(TokenTableTest, ParsesNamesAndTokensAndFindsEachEntry) {
  const std::string text = absl::StrCat(
      "# name token\n\n", "alice ", kAlice, "\n", "  bob\t", kBob, "   \r\n",
      "# a second token of one name: rotation\n", "alice ", kAlice2, "\n");
  absl::StatusOr<TokenTable> t = TokenTable::Parse(text);
  ASSERT_THAT(t.status(), IsOk());
  EXPECT_EQ(t->size(), 3u);
  EXPECT_THAT(t->names(), ElementsAre("alice", "bob"));
  ASSERT_NE(t->Find(kAlice), nullptr);
  EXPECT_EQ(*t->Find(kAlice), "alice");
  EXPECT_EQ(*t->Find(kAlice2), "alice");
  EXPECT_EQ(*t->Find(kBob), "bob");
  // Not a token: a prefix, a longer string, another case, a name, empty.
  for (const std::string& wrong :
       {std::string(kAlice).substr(0, 21), absl::StrCat(kAlice, "x"), std::string("ALICE-TOKEN-0123456789"),
        std::string("alice"), std::string()}) {
    EXPECT_EQ(t->Find(wrong), nullptr) << wrong;
  }
  // An empty file is a table with no tokens (every token refused).
  absl::StatusOr<TokenTable> empty = TokenTable::Parse("# nobody yet\n");
  ASSERT_THAT(empty.status(), IsOk());
  EXPECT_EQ(empty->size(), 0u);
  EXPECT_EQ(empty->Find(kAlice), nullptr);
}

TEST(TokenTableTest, EveryBadLineIsRefusedByNumberWithoutItsToken) {
  const std::string secret = "s3cret-token-value-0001";
  struct Bad {
    std::string text;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {absl::StrCat("alice ", kAlice, "\n", secret, "\n"),
       "line 2: expected \"NAME TOKEN\", got 1 field"},
      {absl::StrCat("\n\nalice ", secret, " extra\n"), "line 3: expected \"NAME TOKEN\", got 3 fields"},
      {absl::StrCat("al/ice ", secret), "line 1: the name has a character outside [A-Za-z0-9._-]"},
      {absl::StrCat(std::string(65, 'a'), " ", secret), "line 1: the name is 65 characters; expected at most 64"},
      {absl::StrCat("anonymous ", secret),
       "line 1: the name \"anonymous\" is reserved (the label of callers without a token)"},
      {absl::StrCat("certificate ", secret),
       "line 1: the name \"certificate\" is reserved (the label of callers without a token)"},
      {"alice short-token-15c", "line 1: the token is 15 characters; expected 16 to 4096"},
      {absl::StrCat("alice ", std::string(4097, 'x')), "line 1: the token is 4097 characters; expected 16 to 4096"},
      {"alice s3cret-token-\x7fvalue", "line 1: the token has a character outside printable ASCII"},
      {absl::StrCat("alice ", secret, "\nbob ", secret, "\n"), "line 2: the same token as line 1"},
  };
  for (const Bad& b : cases) {
    EXPECT_THAT(TokenTable::Parse(b.text), StatusIs(absl::StatusCode::kInvalidArgument, b.message))
        << b.text;
    EXPECT_THAT(std::string(TokenTable::Parse(b.text).status().message()), Not(HasSubstr("s3cret")));
  }
}

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/attnroll_tokens_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/tokens";
  }
  void TearDown() override {
    std::remove(path_.c_str());
    rmdir(dir_.c_str());
  }
  void Write(const std::string& text) {
    std::ofstream out(path_, std::ios::trunc);
    out << text;
  }
  std::string dir_, path_;
};

TEST_F(TokenFileTest, ErrorsNameThePathAndTheLine) {
  EXPECT_THAT(ReadTokenFile(path_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       absl::StrCat(path_, ": cannot read: No such file or directory")));
  Write(absl::StrCat("alice ", kAlice, "\nbob\n"));
  EXPECT_THAT(ReadTokenFile(path_), StatusIs(absl::StatusCode::kInvalidArgument,
                                             absl::StrCat(path_, ": line 2: expected \"NAME TOKEN\", got 1 field")));
  EXPECT_THAT(TokenStore::Open(path_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(": line 2: ")));
  Write(std::string(kMaxTokenFileBytes + 1, '#'));
  EXPECT_THAT(ReadTokenFile(path_), StatusIs(absl::StatusCode::kInvalidArgument,
                                             absl::StrCat(path_, ": larger than 1048576 bytes")));
}

TEST_F(TokenFileTest, AReloadSwapsTheTableAndABadFileKeepsTheOldOne) {
  Write(absl::StrCat("alice ", kAlice, "\n"));
  absl::StatusOr<std::unique_ptr<TokenStore>> store = TokenStore::Open(path_);
  ASSERT_THAT(store.status(), IsOk());
  std::shared_ptr<const TokenTable> before = (*store)->table();
  std::string error;
  EXPECT_EQ((*store)->ReloadIfChanged(&error), TokenStore::Reload::kUnchanged);

  // Bob added, Alice's token rotated.
  Write(absl::StrCat("alice ", kAlice2, "\nbob ", kBob, "\n"));
  EXPECT_EQ((*store)->ReloadIfChanged(&error), TokenStore::Reload::kReloaded);
  std::shared_ptr<const TokenTable> after = (*store)->table();
  EXPECT_EQ(after->Find(kAlice), nullptr);
  EXPECT_EQ(*after->Find(kAlice2), "alice");
  EXPECT_EQ(*after->Find(kBob), "bob");
  // A table handed out earlier stays whole for whoever holds it.
  EXPECT_EQ(*before->Find(kAlice), "alice");

  // A malformed file: the tokens in use stay, the error names the line, and
  // the same bad bytes are not reported again.
  Write(absl::StrCat("alice ", kAlice, "\nbob\n"));
  EXPECT_EQ((*store)->ReloadIfChanged(&error), TokenStore::Reload::kFailed);
  EXPECT_EQ(error, absl::StrCat(path_, ": line 2: expected \"NAME TOKEN\", got 1 field"));
  EXPECT_EQ((*store)->ReloadIfChanged(&error), TokenStore::Reload::kUnchanged);
  EXPECT_EQ(*(*store)->table()->Find(kBob), "bob");
  EXPECT_EQ((*store)->table()->Find(kAlice), nullptr);

  // A missing file: the same, said every time.
  std::remove(path_.c_str());
  EXPECT_EQ((*store)->ReloadIfChanged(&error), TokenStore::Reload::kFailed);
  EXPECT_THAT(error, HasSubstr("cannot read: No such file or directory"));
  EXPECT_EQ(*(*store)->table()->Find(kBob), "bob");

  // Fixed: in use at the next check.
  Write(absl::StrCat("carol ", kAlice, "\n"));
  EXPECT_EQ((*store)->ReloadIfChanged(&error), TokenStore::Reload::kReloaded);
  EXPECT_EQ(*(*store)->table()->Find(kAlice), "carol");
  EXPECT_EQ((*store)->table()->Find(kBob), nullptr);
}

}  // namespace
}  // namespace attnroll::runtime
