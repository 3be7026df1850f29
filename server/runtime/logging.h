// Logs for people: one line per event, key=value fields, a level filter and a
// rate limit, so that a flood of refusals cannot fill a disk.
//
//   2026-12-01T09:30:00.123Z WARNING pass refused: request_id=r7 rpc=Explain
//   client=ipv4:127.0.0.1 status=RESOURCE_EXHAUSTED reason=memory message="over budget: ..."
//
// (one line). The time is UTC with milliseconds. A value is written bare when
// it is a plain token and in double quotes otherwise (empty, spaces, '=',
// quotes, control characters), with \" \\ \n \r \t and \xHH escapes, so a
// line never breaks; a value longer than kMaxLogValueBytes is cut and says
// how much was cut. Fields carry names, counts, codes and messages, never
// tensor contents.
//
// Rate limit: a token bucket of `lines_per_second` lines, holding up to 4x
// that (at least one line). A line that finds the bucket empty is dropped and
// counted; the next line written is preceded by
//   2026-12-01T09:30:01.123Z WARNING 920 lines suppressed (rate limit 20 lines/s, bursts of 80)
// The process's lifecycle lines (started, shutting down, stopped: a few per
// run) go through LogLifecycle, which the rate limit never drops, so a flood
// of refusals during a shutdown cannot hide how the shutdown went. They
// still take a token when there is one.
//
// Use: main sets the process-wide logger from the config (SetLogger); code
// anywhere in server/ calls
//   runtime::Log(LogLevel::kWarning, "pass refused", {{"rpc", "Explain"}, {"bytes", n}});
// A filtered-out level costs a pointer load and a compare: values are views
// and numbers, formatted only when the line is written.
#ifndef ATTNROLL_SERVER_RUNTIME_LOGGING_H_
#define ATTNROLL_SERVER_RUNTIME_LOGGING_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/runtime/config.h"

namespace attnroll::runtime {

// "DEBUG", "INFO", "WARNING", "ERROR".
absl::string_view LogLevelName(LogLevel level);

inline constexpr size_t kMaxLogValueBytes = 2048;

// The value of one field: a view of a string (alive for the Log call) or a
// number, formatted when the line is written.
class LogValue {
 public:
  LogValue(absl::string_view s) : kind_(Kind::kString), string_(s) {}  // NOLINT: implicit
  LogValue(const char* s) : LogValue(absl::string_view(s)) {}          // NOLINT
  LogValue(const std::string& s) : LogValue(absl::string_view(s)) {}   // NOLINT
  LogValue(bool b) : kind_(Kind::kBool), int_(b ? 1 : 0) {}            // NOLINT
  LogValue(double d) : kind_(Kind::kDouble), double_(d) {}             // NOLINT
  template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  LogValue(T v)  // NOLINT: implicit
      : kind_(std::is_signed_v<T> ? Kind::kInt : Kind::kUint),
        int_(static_cast<int64_t>(v)),
        uint_(static_cast<uint64_t>(v)) {}

  // Appends the value, quoted and escaped if it needs to be.
  void AppendTo(std::string* out) const;

 private:
  enum class Kind { kString, kBool, kInt, kUint, kDouble };
  Kind kind_;
  absl::string_view string_;
  int64_t int_ = 0;
  uint64_t uint_ = 0;
  double double_ = 0;
};

using LogField = std::pair<absl::string_view, LogValue>;

class Logger {
 public:
  using Clock = std::function<absl::Time()>;

  // Writes lines at or above `min_level` to `out` (not owned; flushed after
  // every line). `clock` gives the time of a line and drives the rate limit.
  Logger(LogLevel min_level, double lines_per_second, std::FILE* out = stderr,
         Clock clock = [] { return absl::Now(); });

  bool Enabled(LogLevel level) const { return level >= min_level_; }

  // Writes one line "TIME LEVEL event: key=value ..." (no ':' without
  // fields), unless the level is filtered out or the rate limit drops it
  // (never with kUnlimited: for the few lifecycle lines of a run).
  enum class Limit { kRateLimited, kUnlimited };
  void Log(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields = {},
           Limit limit = Limit::kRateLimited);

  // Lines dropped by the rate limit so far.
  int64_t suppressed() const;

 private:
  const LogLevel min_level_;
  const double rate_;      // lines per second
  const double capacity_;  // the bucket: 4 x rate, at least 1
  std::FILE* const out_;
  const Clock clock_;

  mutable absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_refill_ ABSL_GUARDED_BY(mu_);
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t unreported_ ABSL_GUARDED_BY(mu_) = 0;  // dropped since the last written line
};

// The process-wide logger. Until SetLogger is called (and after
// SetLogger(nullptr)) it is a built-in one: info and above, 20 lines/s, stderr.
// `logger` is not owned and must outlive every Log call that may reach it
// (main sets it once at start and never frees it).
void SetLogger(Logger* logger);
Logger& GetLogger();

inline bool LogEnabled(LogLevel level) { return GetLogger().Enabled(level); }
inline void Log(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields = {}) {
  Logger& logger = GetLogger();
  if (logger.Enabled(level)) logger.Log(level, event, fields);
}
// A lifecycle line of the process (started, shutting down, stopped): never
// dropped by the rate limit.
inline void LogLifecycle(LogLevel level, absl::string_view event,
                         std::initializer_list<LogField> fields = {}) {
  Logger& logger = GetLogger();
  if (logger.Enabled(level)) logger.Log(level, event, fields, Logger::Limit::kUnlimited);
}

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_LOGGING_H_
