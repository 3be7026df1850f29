#include "server/runtime/logging.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace attnroll::runtime {
namespace {

// Appends `s` with every byte that could break a line or a field escaped.
void AppendEscaped(absl::string_view s, std::string* out) {
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (u < 0x20 || u == 0x7f) {
          absl::StrAppendFormat(out, "\\x%02x", u);
        } else {
          out->push_back(ch);
        }
    }
  }
}

// A bare value: non-empty, printable, no space, '=' or quote.
bool IsPlain(absl::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u <= ' ' || u == 0x7f || ch == '"' || ch == '=' || ch == '\\') return false;
  }
  return true;
}

void AppendKey(absl::string_view key, std::string* out) {
  for (char ch : key) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '_' || ch == '.' || ch == '-';
    out->push_back(ok ? ch : '_');
  }
}

// The event text: free words, never broken over lines.
void AppendEvent(absl::string_view event, std::string* out) {
  for (char ch : event) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) {
      AppendEscaped(absl::string_view(&ch, 1), out);
    } else {
      out->push_back(ch);
    }
  }
}

void AppendTime(absl::Time t, std::string* out) {
  out->append(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone()));
}

std::string RateText(double v) { return absl::StrFormat("%g", v); }

}  // namespace

absl::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
  }
  return "INFO";
}

void LogValue::AppendTo(std::string* out) const {
  switch (kind_) {
    case Kind::kString: {
      absl::string_view s = string_;
      const size_t cut = s.size() > kMaxLogValueBytes ? s.size() - kMaxLogValueBytes : 0;
      s.remove_suffix(cut);
      if (cut == 0 && IsPlain(s)) {
        out->append(s.data(), s.size());
        return;
      }
      out->push_back('"');
      AppendEscaped(s, out);
      if (cut > 0) absl::StrAppend(out, "... (", cut, " more bytes)");
      out->push_back('"');
      return;
    }
    case Kind::kBool: out->append(int_ != 0 ? "true" : "false"); return;
    case Kind::kInt: absl::StrAppend(out, int_); return;
    case Kind::kUint: absl::StrAppend(out, uint_); return;
    case Kind::kDouble:
      if (std::isfinite(double_)) {
        absl::StrAppendFormat(out, "%g", double_);
      } else {
        out->append(std::isnan(double_) ? "nan" : (double_ > 0 ? "inf" : "-inf"));
      }
      return;
  }
}

Logger::Logger(LogLevel min_level, double lines_per_second, std::FILE* out, Clock clock)
    : min_level_(min_level),
      rate_(lines_per_second > 0 ? lines_per_second : 1),
      capacity_(std::max(1.0, 4 * rate_)),
      out_(out),
      clock_(std::move(clock)),
      tokens_(capacity_),
      last_refill_(clock_()) {}

void Logger::Log(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields,
                 Limit limit) {
  if (!Enabled(level)) return;
  const absl::Time now = clock_();
  int64_t unreported = 0;
  {
    absl::MutexLock lock(&mu_);
    if (now > last_refill_) {
      tokens_ = std::min(capacity_, tokens_ + absl::ToDoubleSeconds(now - last_refill_) * rate_);
      last_refill_ = now;
    }
    if (tokens_ >= 1) {
      tokens_ -= 1;
    } else if (limit == Limit::kRateLimited) {
      ++suppressed_;
      ++unreported_;
      return;
    }
    unreported = unreported_;
    unreported_ = 0;
  }
  // Formatted outside the lock; written in one call under it, so lines of
  // different threads never interleave.
  std::string line;
  line.reserve(128);
  if (unreported > 0) {
    AppendTime(now, &line);
    absl::StrAppend(&line, " WARNING ", unreported, unreported == 1 ? " line" : " lines",
                    " suppressed (rate limit ", RateText(rate_), " lines/s, bursts of ",
                    RateText(capacity_), ")\n");
  }
  AppendTime(now, &line);
  line.push_back(' ');
  line.append(LogLevelName(level).data(), LogLevelName(level).size());
  line.push_back(' ');
  AppendEvent(event, &line);
  bool first = true;
  for (const LogField& f : fields) {
    line.append(first ? ": " : " ");
    first = false;
    AppendKey(f.first, &line);
    line.push_back('=');
    f.second.AppendTo(&line);
  }
  line.push_back('\n');
  absl::MutexLock lock(&mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

int64_t Logger::suppressed() const {
  absl::MutexLock lock(&mu_);
  return suppressed_;
}

namespace {
std::atomic<Logger*> g_logger{nullptr};

Logger& BuiltInLogger() {
  static Logger* const logger = new Logger(LogLevel::kInfo, 20);  // never freed: usable until exit
  return *logger;
}
}  // namespace

void SetLogger(Logger* logger) { g_logger.store(logger, std::memory_order_release); }

Logger& GetLogger() {
  Logger* logger = g_logger.load(std::memory_order_acquire);
  return logger != nullptr ? *logger : BuiltInLogger();
}

}  // namespace attnroll::runtime
