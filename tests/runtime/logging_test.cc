// The logger: the line format (fields, quoting, escaping), the level filter,
// the rate limit on an injected clock, and lines intact under several threads.
#include "server/runtime/logging.h"

#include <cstdio>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"

namespace attnroll::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// A temporary file to log into, read back whole.
class LogFile {
 public:
  LogFile() : f_(std::tmpfile()) {}
  ~LogFile() { std::fclose(f_); }
  std::FILE* get() { return f_; }
  std::string Contents() {
    std::fflush(f_);
    std::rewind(f_);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f_)) > 0) out.append(buf, n);
    std::fseek(f_, 0, SEEK_END);
    return out;
  }
  std::vector<std::string> Lines() {
    std::vector<std::string> lines = absl::StrSplit(Contents(), '\n');
    EXPECT_EQ(lines.back(), "") << "the last line is not terminated";
    lines.pop_back();
    return lines;
  }

 private:
  std::FILE* f_;
};

absl::Time T0() {
  return absl::FromCivil(absl::CivilSecond(2026, 12, 1, 9, 30, 0), absl::UTCTimeZone()) +
         absl::Milliseconds(123);
}

TEST(LoggingTest, OneLinePerEventWithKeyValueFields) {
  LogFile file;
  Logger logger(LogLevel::kDebug, 100, file.get(), [] { return T0(); });
  logger.Log(LogLevel::kWarning, "pass refused",
             {{"request_id", "r-7"},
              {"rpc", "Explain"},
              {"client", "ipv4:127.0.0.1"},
              {"status", "RESOURCE_EXHAUSTED"},
              {"reason", "memory"},
              {"message", std::string("over budget: 5 > 4\nnext \"line\" back\\slash")},
              {"bytes", int64_t{1} << 40},
              {"layers", 12},
              {"size", size_t{7}},
              {"share", 0.5},
              {"cancelled", false},
              {"empty", ""},
              {"eq", "a=b"},
              {"ctl", "\t\x01\x7f"},
              {"utf8", "caf\xc3\xa9"}});
  logger.Log(LogLevel::kInfo, "started");
  logger.Log(LogLevel::kError, "odd\nevent", {{"bad key=", "v"}});
  EXPECT_THAT(
      file.Lines(),
      ElementsAre(
          "2026-12-01T09:30:00.123Z WARNING pass refused: request_id=r-7 rpc=Explain "
          "client=ipv4:127.0.0.1 status=RESOURCE_EXHAUSTED reason=memory "
          "message=\"over budget: 5 > 4\\nnext \\\"line\\\" back\\\\slash\" bytes=1099511627776 "
          "layers=12 size=7 share=0.5 cancelled=false empty=\"\" eq=\"a=b\" "
          "ctl=\"\\t\\x01\\x7f\" utf8=caf\xc3\xa9",
          "2026-12-01T09:30:00.123Z INFO started",
          "2026-12-01T09:30:00.123Z ERROR odd\\nevent: bad_key_=v"));
}

TEST(LoggingTest, TheTimeIsUtcWithMilliseconds) {
  LogFile file;
  absl::Time now = absl::FromUnixMillis(1);
  Logger logger(LogLevel::kInfo, 100, file.get(), [&now] { return now; });
  logger.Log(LogLevel::kInfo, "a");
  now = absl::FromUnixSeconds(1798761599) + absl::Microseconds(999999);  // truncated, not rounded
  logger.Log(LogLevel::kInfo, "b");
  EXPECT_THAT(file.Lines(), ElementsAre("1970-01-01T00:00:00.001Z INFO a",
                                        "2026-12-31T23:59:59.999Z INFO b"));
}

TEST(LoggingTest, ALongValueIsCutAndSaysHowMuch) {
  LogFile file;
  Logger logger(LogLevel::kInfo, 100, file.get(), [] { return T0(); });
  const std::string big(kMaxLogValueBytes + 952, 'x');
  logger.Log(LogLevel::kInfo, "big", {{"message", big}});
  EXPECT_THAT(file.Lines(),
              ElementsAre(absl::StrCat("2026-12-01T09:30:00.123Z INFO big: message=\"",
                                       std::string(kMaxLogValueBytes, 'x'), "... (952 more bytes)\"")));
}

TEST(LoggingTest, LevelsBelowTheMinimumAreNotWritten) {
  LogFile file;
  Logger logger(LogLevel::kWarning, 100, file.get(), [] { return T0(); });
  EXPECT_FALSE(logger.Enabled(LogLevel::kDebug));
  EXPECT_FALSE(logger.Enabled(LogLevel::kInfo));
  EXPECT_TRUE(logger.Enabled(LogLevel::kWarning));
  EXPECT_TRUE(logger.Enabled(LogLevel::kError));
  for (int i = 0; i < 1000; ++i) {
    logger.Log(LogLevel::kDebug, "d", {{"i", i}});
    logger.Log(LogLevel::kInfo, "i", {{"i", i}});
  }
  logger.Log(LogLevel::kWarning, "w");
  logger.Log(LogLevel::kError, "e");
  EXPECT_THAT(file.Lines(), ElementsAre("2026-12-01T09:30:00.123Z WARNING w",
                                        "2026-12-01T09:30:00.123Z ERROR e"));
  EXPECT_EQ(logger.suppressed(), 0);  // filtered is not suppressed
  EXPECT_EQ(LogLevelName(LogLevel::kDebug), "DEBUG");
}

TEST(LoggingTest, ABurstGivesFourTimesTheRateThenACountOfTheRest) {
  LogFile file;
  absl::Time now = T0();
  Logger logger(LogLevel::kInfo, 20, file.get(), [&now] { return now; });
  for (int i = 0; i < 1000; ++i) logger.Log(LogLevel::kError, "flood", {{"i", i}});
  std::vector<std::string> lines = file.Lines();
  ASSERT_THAT(lines, SizeIs(80));
  EXPECT_EQ(lines.front(), "2026-12-01T09:30:00.123Z ERROR flood: i=0");
  EXPECT_EQ(lines.back(), "2026-12-01T09:30:00.123Z ERROR flood: i=79");
  EXPECT_EQ(logger.suppressed(), 920);

  // A second later the bucket holds 20 lines; the first one written says
  // how many were dropped.
  now += absl::Seconds(1);
  logger.Log(LogLevel::kInfo, "calm");
  lines = file.Lines();
  ASSERT_THAT(lines, SizeIs(82));
  EXPECT_EQ(lines[80],
            "2026-12-01T09:30:01.123Z WARNING 920 lines suppressed (rate limit 20 lines/s, "
            "bursts of 80)");
  EXPECT_EQ(lines[81], "2026-12-01T09:30:01.123Z INFO calm");
  for (int i = 0; i < 19; ++i) logger.Log(LogLevel::kInfo, "more");
  logger.Log(LogLevel::kInfo, "dropped");
  now += absl::Milliseconds(50);  // one line's worth
  logger.Log(LogLevel::kInfo, "after");
  lines = file.Lines();
  ASSERT_THAT(lines, SizeIs(103));
  EXPECT_EQ(lines[101],
            "2026-12-01T09:30:01.173Z WARNING 1 line suppressed (rate limit 20 lines/s, bursts "
            "of 80)");
  EXPECT_EQ(lines[102], "2026-12-01T09:30:01.173Z INFO after");
  EXPECT_EQ(logger.suppressed(), 921);

  // Idle for a long time: the bucket refills to its burst, no more.
  now += absl::Hours(1);
  for (int i = 0; i < 100; ++i) logger.Log(LogLevel::kInfo, "again");
  EXPECT_THAT(file.Lines(), SizeIs(103 + 80));
  EXPECT_EQ(logger.suppressed(), 941);
}

TEST(LoggingTest, LifecycleLinesAreNeverDroppedByTheRateLimit) {
  // A flood empties the bucket; the lines of the process's lifecycle still
  // go out (after the count of what was dropped), and take no token they
  // do not find.
  LogFile file;
  absl::Time now = T0();
  Logger logger(LogLevel::kInfo, 20, file.get(), [&now] { return now; });
  for (int i = 0; i < 100; ++i) logger.Log(LogLevel::kWarning, "refused", {{"i", i}});
  logger.Log(LogLevel::kInfo, "shutting down", {{"grace_seconds", 5}}, Logger::Limit::kUnlimited);
  logger.Log(LogLevel::kInfo, "dropped");
  logger.Log(LogLevel::kInfo, "stopped", {}, Logger::Limit::kUnlimited);
  std::vector<std::string> lines = file.Lines();
  ASSERT_THAT(lines, SizeIs(84));
  EXPECT_EQ(lines[80],
            "2026-12-01T09:30:00.123Z WARNING 20 lines suppressed (rate limit 20 lines/s, "
            "bursts of 80)");
  EXPECT_EQ(lines[81], "2026-12-01T09:30:00.123Z INFO shutting down: grace_seconds=5");
  EXPECT_EQ(lines[82],
            "2026-12-01T09:30:00.123Z WARNING 1 line suppressed (rate limit 20 lines/s, "
            "bursts of 80)");
  EXPECT_EQ(lines[83], "2026-12-01T09:30:00.123Z INFO stopped");
  EXPECT_EQ(logger.suppressed(), 21);
  // A level below the minimum is still filtered out.
  logger.Log(LogLevel::kDebug, "debug", {}, Logger::Limit::kUnlimited);
  EXPECT_THAT(file.Lines(), SizeIs(84));
  // Once the bucket refills, a lifecycle line takes its token like any other.
  now += absl::Milliseconds(50);
  logger.Log(LogLevel::kInfo, "started", {}, Logger::Limit::kUnlimited);
  logger.Log(LogLevel::kInfo, "dropped too");
  EXPECT_THAT(file.Lines(), SizeIs(85));
  EXPECT_EQ(logger.suppressed(), 22);
}

TEST(LoggingTest, ASteadyRateUnderTheLimitLosesNothing) {
  LogFile file;
  absl::Time now = T0();
  Logger logger(LogLevel::kInfo, 20, file.get(), [&now] { return now; });
  for (int i = 0; i < 1000; ++i) {
    logger.Log(LogLevel::kInfo, "tick", {{"i", i}});
    now += absl::Milliseconds(50);
  }
  EXPECT_THAT(file.Lines(), SizeIs(1000));
  EXPECT_EQ(logger.suppressed(), 0);
}

TEST(LoggingTest, ARateBelowOneLinePerSecondStillLetsOneLineThrough) {
  LogFile file;
  absl::Time now = T0();
  Logger logger(LogLevel::kInfo, 0.1, file.get(), [&now] { return now; });
  logger.Log(LogLevel::kInfo, "one");
  logger.Log(LogLevel::kInfo, "two");
  now += absl::Seconds(10);
  logger.Log(LogLevel::kInfo, "three");
  EXPECT_THAT(file.Lines(),
              ElementsAre("2026-12-01T09:30:00.123Z INFO one",
                          "2026-12-01T09:30:10.123Z WARNING 1 line suppressed (rate limit 0.1 "
                          "lines/s, bursts of 1)",
                          "2026-12-01T09:30:10.123Z INFO three"));
}

TEST(LoggingTest, ThreadsNeverInterleaveWithinALine) {
  LogFile file;
  Logger logger(LogLevel::kInfo, 1e6, file.get());  // the real clock; 4e6 lines of burst
  constexpr int kThreads = 8, kLines = 500;
  const std::string payload(300, 'p');
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kLines; ++i) {
        logger.Log(LogLevel::kInfo, "work item",
                   {{"thread", t}, {"seq", i}, {"text", absl::StrCat("some words ", payload)}});
      }
    });
  }
  for (std::thread& th : threads) th.join();
  const std::regex line_re(
      "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z INFO work item: thread=(\\d+) "
      "seq=(\\d+) text=\"some words p{300}\"");
  std::set<std::pair<int, int>> seen;
  const std::vector<std::string> lines = file.Lines();
  ASSERT_THAT(lines, SizeIs(kThreads * kLines));
  for (const std::string& line : lines) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, line_re)) << line;
    int t = 0, i = 0;
    ASSERT_TRUE(absl::SimpleAtoi(m[1].str(), &t) && absl::SimpleAtoi(m[2].str(), &i));
    EXPECT_TRUE(seen.insert({t, i}).second) << line;
  }
  EXPECT_EQ(seen.size(), size_t{kThreads * kLines});
  EXPECT_EQ(logger.suppressed(), 0);
}

TEST(LoggingTest, ThreadsShareOneRateLimit) {
  LogFile file;
  absl::Time now = T0();
  Logger logger(LogLevel::kInfo, 20, file.get(), [&now] { return now; });  // read-only below
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) logger.Log(LogLevel::kWarning, "flood", {{"thread", t}});
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_THAT(file.Lines(), SizeIs(80));
  EXPECT_EQ(logger.suppressed(), 8000 - 80);
  now += absl::Seconds(1);
  logger.Log(LogLevel::kInfo, "calm");
  EXPECT_THAT(file.Lines().at(80), HasSubstr("WARNING 7920 lines suppressed"));
}

TEST(LoggingTest, TheProcessWideLogger) {
  LogFile file;
  Logger mine(LogLevel::kWarning, 100, file.get(), [] { return T0(); });
  EXPECT_TRUE(LogEnabled(LogLevel::kInfo));  // the built-in one: info and above
  EXPECT_FALSE(LogEnabled(LogLevel::kDebug));
  SetLogger(&mine);
  EXPECT_EQ(&GetLogger(), &mine);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  Log(LogLevel::kInfo, "filtered");
  Log(LogLevel::kWarning, "shutdown", {{"signal", "SIGTERM"}, {"grace_seconds", 10.0}});
  SetLogger(nullptr);
  EXPECT_NE(&GetLogger(), &mine);
  EXPECT_THAT(file.Lines(),
              ElementsAre("2026-12-01T09:30:00.123Z WARNING shutdown: signal=SIGTERM grace_seconds=10"));
}

}  // namespace
}  // namespace attnroll::runtime
