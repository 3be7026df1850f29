#include "server/runtime/config.h"

#include <unistd.h>  // environ

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/runtime/cpu_budget.h"

namespace attnroll::runtime {
namespace {

constexpr int64_t kKiB = int64_t{1} << 10;
constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kPiB = int64_t{1} << 50;
// gRPC keeps message sizes in an int.
constexpr int64_t kGrpcMaxBytes = std::numeric_limits<int32_t>::max();  // 2 GiB - 1
// gRPC takes its connection timings as int milliseconds: INT_MAX ms, in whole seconds.
constexpr double kGrpcMaxSeconds = 2147483;
constexpr double kDay = 86400;

// "64 MiB" for a whole number of KiB, MiB, GiB, TiB or PiB; "" otherwise.
std::string HumanBytes(int64_t v) {
  static constexpr const char* kUnits[] = {"PiB", "TiB", "GiB", "MiB", "KiB"};
  for (int i = 0; i < 5; ++i) {
    const int64_t unit = int64_t{1} << (10 * (5 - i));
    if (v >= unit && v % unit == 0) return absl::StrCat(v / unit, " ", kUnits[i]);
  }
  if (v == kGrpcMaxBytes) return "2 GiB - 1";
  return "";
}

// The value seen, as an error shows it: bare when it is a plain token,
// quoted and escaped otherwise (empty, spaces, control characters).
std::string Seen(absl::string_view s) {
  bool plain = !s.empty();
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u <= ' ' || u == '"' || u == '\\' || u == 0x7f) plain = false;
  }
  return plain ? std::string(s) : absl::StrCat("\"", absl::CHexEscape(s), "\"");
}

// The shortest %g form that reads back as the same double: "0.1", "1e+11", "2147483".
std::string Number(double v) {
  for (int precision = 6; precision < 17; ++precision) {
    const std::string s = absl::StrFormat("%.*g", precision, v);
    double back;
    if (absl::SimpleAtod(s, &back) && back == v) return s;
  }
  return absl::StrFormat("%.17g", v);
}

struct Flag {
  const char* group;
  const char* name;
  const char* metavar;
  const char* help;
  std::string range;  // as --help and the errors show it
  std::function<std::string()> current;
  // Sets the field from the text; false leaves it alone (the caller reports
  // the flag, `expected` and the value seen, plus `*detail` if set).
  std::function<bool(absl::string_view, std::string* detail)> set;
  std::string expected;  // "an integer in [1, 65536]"
  bool boolean = false;  // --name alone means --name=true
};

// An integer field of type T, in [min, max]. The text is parsed as int64 with
// overflow detection and range-checked before it is narrowed to T, so no
// value wraps.
template <typename T>
Flag IntFlag(const char* group, const char* name, const char* help, T* value, int64_t min,
             int64_t max, bool bytes = false) {
  if (min > max || min < int64_t{std::numeric_limits<T>::min()} ||
      max > int64_t{std::numeric_limits<T>::max()}) {
    std::fprintf(stderr, "attnroll-server: flag table: --%s's range does not fit its field\n", name);
    std::abort();
  }
  std::string range = absl::StrCat("[", min, ", ", max, "]");
  if (bytes && !HumanBytes(min).empty() && !HumanBytes(max).empty()) {
    absl::StrAppend(&range, " (", HumanBytes(min), " to ", HumanBytes(max), ")");
  }
  Flag f{group, name, bytes ? "BYTES" : "INT", help, range, nullptr, nullptr,
         absl::StrCat("an integer in ", range)};
  f.current = [value, bytes] {
    std::string s = absl::StrCat(*value);
    if (bytes && !HumanBytes(*value).empty()) absl::StrAppend(&s, " (", HumanBytes(*value), ")");
    return s;
  };
  f.set = [value, min, max](absl::string_view s, std::string*) {
    // Digits with an optional sign and nothing else (SimpleAtoi alone would
    // also take surrounding spaces).
    absl::string_view digits = s;
    if (!digits.empty() && (digits.front() == '-' || digits.front() == '+')) digits.remove_prefix(1);
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(),
                                       [](char ch) { return absl::ascii_isdigit(ch); })) {
      return false;
    }
    int64_t v;
    if (!absl::SimpleAtoi(s, &v) || v < min || v > max) return false;  // fails on int64 overflow
    *value = static_cast<T>(v);
    return true;
  };
  return f;
}

// A finite double in [min, max], or (min, max] when `min_open`.
Flag DoubleFlag(const char* group, const char* name, const char* metavar, const char* help,
                double* value, double min, double max, bool min_open = false) {
  const std::string range = absl::StrCat(min_open ? "(" : "[", Number(min), ", ", Number(max), "]");
  const bool seconds = absl::string_view(metavar) == "SECONDS";
  Flag f{group, name, metavar, help, range, nullptr, nullptr,
         absl::StrCat(seconds ? "a number of seconds in " : "a number in ", range)};
  f.current = [value] { return Number(*value); };
  f.set = [value, min, max, min_open](absl::string_view s, std::string*) {
    if (s.empty() || absl::ascii_isspace(s.front()) || absl::ascii_isspace(s.back())) return false;
    double v;
    if (!absl::SimpleAtod(s, &v) || !std::isfinite(v)) return false;
    if (v > max || v < min || (min_open && v == min)) return false;
    *value = v;
    return true;
  };
  return f;
}

// A file path; empty (the default) means none. Control characters are refused
// (a path is shown in logs and errors).
Flag PathFlag(const char* group, const char* name, const char* help, std::string* value) {
  Flag f{group, name, "FILE", help, "a file path (empty: none)", nullptr, nullptr,
         "a file path (no control characters, no leading '-')"};
  f.current = [value] { return *value; };
  f.set = [value](absl::string_view s, std::string*) {
    if (!s.empty() && s.front() == '-') return false;  // a forgotten value: the next flag
    for (char ch : s) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x20 || u == 0x7f) return false;
    }
    *value = std::string(s);
    return true;
  };
  return f;
}

// true or false; the flag alone means true.
Flag BoolFlag(const char* group, const char* name, const char* help, bool* value) {
  Flag f{group, name, "", help, "true|false", nullptr, nullptr, "true or false"};
  f.current = [value] { return std::string(*value ? "true" : "false"); };
  f.set = [value](absl::string_view s, std::string*) {
    if (s != "true" && s != "false") return false;
    *value = s == "true";
    return true;
  };
  f.boolean = true;
  return f;
}

constexpr const char* kAddressForm =
    "HOST:PORT (a non-empty host, a port in [0, 65535], IPv6 as [::1]:PORT)";

// Checks one HOST:PORT; returns what is wrong with it, or "".
std::string CheckHostPort(absl::string_view s) {
  absl::string_view host, port;
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == absl::string_view::npos) return "no ']' after an IPv6 host";
    host = s.substr(1, close - 1);
    if (close + 1 >= s.size() || s[close + 1] != ':') return "no :PORT after ']'";
    port = s.substr(close + 2);
  } else {
    const size_t colon = s.rfind(':');
    if (colon == absl::string_view::npos) return "no :PORT";
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != absl::string_view::npos) return "an IPv6 host goes in brackets: [::1]:PORT";
  }
  if (host.empty()) return "empty host";
  for (char ch : host) {
    const auto u = static_cast<unsigned char>(ch);
    if (u <= ' ' || u == 0x7f || ch == '[' || ch == ']' || ch == ',') return "bad character in the host";
  }
  int port_value = -1;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char ch) { return absl::ascii_isdigit(ch); }) ||
      !absl::SimpleAtoi(port, &port_value) || port_value > 65535) {
    return absl::StrCat("port ", Seen(port), " is not in [0, 65535]");
  }
  return "";
}

absl::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

constexpr const char* kNetwork = "Network";
constexpr const char* kWork = "Workers";
constexpr const char* kAdmission = "Admission and memory";
constexpr const char* kCalls = "Calls and streams";
constexpr const char* kConnections = "Connections (HTTP/2)";
constexpr const char* kLimits = "Per-pass limits";
constexpr const char* kMonitoring = "Monitoring";
constexpr const char* kLogging = "Logging";
constexpr const char* kShutdown = "Shutdown";
constexpr const char* kSecurity = "Security (TLS, mutual TLS, tokens)";

std::vector<Flag> Flags(ServerConfig* c) {
  PassLimits* l = &c->limits;
  std::vector<Flag> flags;
  {
    Flag f{kNetwork, "listen", "HOST:PORT[,...]",
           "gRPC listen addresses, comma-separated (port 0 picks a free port)",
           "non-empty comma list of HOST:PORT, IPv6 as [::1]:PORT", nullptr, nullptr,
           absl::StrCat("a comma list of ", kAddressForm)};
    f.current = [c] { return absl::StrJoin(c->listen, ","); };
    f.set = [c](absl::string_view s, std::string* detail) {
      if (s.empty()) return false;
      std::vector<std::string> items = absl::StrSplit(s, ',');
      for (const std::string& item : items) {
        const std::string wrong = CheckHostPort(item);
        if (!wrong.empty()) {
          *detail = items.size() == 1 ? wrong : absl::StrCat(Seen(item), ": ", wrong);
          return false;
        }
      }
      c->listen = std::move(items);
      return true;
    };
    flags.push_back(std::move(f));
  }
  {
    Flag f{kNetwork, "metrics-listen", "HOST:PORT|none",
           "Prometheus /metrics address, IPv4 or a host name (port 0 picks a free port), or none",
           "HOST:PORT or none", nullptr, nullptr, absl::StrCat(kAddressForm, " or none")};
    f.current = [c] { return c->metrics_listen.empty() ? std::string("none") : c->metrics_listen; };
    f.set = [c](absl::string_view s, std::string* detail) {
      if (s != "none") *detail = CheckHostPort(s);
      // Debian 12's civetweb (the metrics endpoint) is built without IPv6.
      if (detail->empty() && absl::StartsWith(s, "[")) {
        *detail = "the metrics endpoint has no IPv6 (Debian 12's civetweb is built without it)";
      }
      if (!detail->empty()) return false;
      c->metrics_listen = std::string(s);
      return true;
    };
    flags.push_back(std::move(f));
  }
  flags.push_back(IntFlag(kWork, "workers",
                          "worker threads for decoding and math (0 = usable CPUs: affinity, CPU quota)",
                          &c->workers, 0, 1024));
  flags.push_back(IntFlag(kWork, "long-work-workers",
                          "workers that may run long work at once (flow, large comparisons, "
                          "audit items; 0 = workers - 1, at least 1)",
                          &c->long_work_workers, 0, 1024));
  flags.push_back(IntFlag(kWork, "queue-size",
                          "tasks that may wait for a worker before RESOURCE_EXHAUSTED",
                          &c->queue_size, 1, 1000000));
  flags.push_back(IntFlag(kAdmission, "max-memory-bytes", "working memory of all passes in flight",
                          &c->max_memory_bytes, kMiB, kPiB, true));
  flags.push_back(IntFlag(kAdmission, "buffer-cache-bytes",
                          "large buffers of finished passes kept for the next ones (no page "
                          "faults when reused; 0 = none)",
                          &c->buffer_cache_bytes, 0, kPiB, true));
  flags.push_back(IntFlag(kAdmission, "max-passes-in-flight", "admitted passes and calls at once",
                          &c->max_passes_in_flight, 1, 1000000));
  flags.push_back(DoubleFlag(kAdmission, "admission-wait-seconds", "SECONDS",
                             "how long a new pass waits for room before RESOURCE_EXHAUSTED",
                             &c->admission_wait_seconds, 0, 3600));
  flags.push_back(DoubleFlag(kAdmission, "client-share", "FRACTION",
                             "share of the passes in flight and of the memory one client may "
                             "hold (1 = no limit)",
                             &c->client_share, 0, 1, /*min_open=*/true));
  flags.push_back(DoubleFlag(kCalls, "idle-timeout-seconds", "SECONDS",
                             "a call holding a pass (or that sent nothing yet) and receiving "
                             "nothing this long is ended and its memory freed",
                             &c->idle_timeout_seconds, 0, kDay, /*min_open=*/true));
  flags.push_back(DoubleFlag(kCalls, "stream-idle-timeout-seconds", "SECONDS",
                             "an ExplainStream or Audit call with nothing open, idle this long, "
                             "ends",
                             &c->stream_idle_timeout_seconds, 0, kDay, /*min_open=*/true));
  flags.push_back(IntFlag(kCalls, "max-passes-per-stream", "open passes on one ExplainStream",
                          &c->max_passes_per_stream, 1, 1000000));
  flags.push_back(IntFlag(kCalls, "max-passes-per-connection", "open passes of one connection",
                          &c->max_passes_per_connection, 1, 1000000));
  flags.push_back(IntFlag(kConnections, "max-concurrent-streams", "HTTP/2 streams per connection",
                          &c->max_concurrent_streams, 1, 1000000));
  flags.push_back(DoubleFlag(kConnections, "keepalive-time-seconds", "SECONDS",
                             "the server pings a connection idle this long", &c->keepalive_time_seconds,
                             0, kGrpcMaxSeconds, /*min_open=*/true));
  flags.push_back(DoubleFlag(kConnections, "keepalive-timeout-seconds", "SECONDS",
                             "... and closes it if the ping gets no answer within this",
                             &c->keepalive_timeout_seconds, 0, kGrpcMaxSeconds, /*min_open=*/true));
  flags.push_back(DoubleFlag(kConnections, "min-client-ping-interval-seconds", "SECONDS",
                             "clients pinging more often than this are closed",
                             &c->min_client_ping_interval_seconds, 0, kGrpcMaxSeconds));
  flags.push_back(DoubleFlag(kConnections, "max-connection-idle-seconds", "SECONDS",
                             "a connection without calls this long is closed (0 = never)",
                             &c->max_connection_idle_seconds, 0, kGrpcMaxSeconds));
  flags.push_back(DoubleFlag(kConnections, "max-connection-age-seconds", "SECONDS",
                             "a connection older than this is closed (0 = unlimited; set it "
                             "behind a load balancer)",
                             &c->max_connection_age_seconds, 0, kGrpcMaxSeconds));
  flags.push_back(DoubleFlag(kConnections, "max-connection-age-grace-seconds", "SECONDS",
                             "calls on a connection closed for its age get this long to finish",
                             &c->max_connection_age_grace_seconds, 0, kGrpcMaxSeconds));
  flags.push_back(IntFlag(kConnections, "grpc-memory-bytes", "gRPC's own buffers (resource quota)",
                          &c->grpc_memory_bytes, kMiB, kPiB, true));
  flags.push_back(IntFlag(kLimits, "max-layers", "layers per pass", &l->max_layers, 1, 4096));
  flags.push_back(IntFlag(kLimits, "max-heads", "heads per layer", &l->max_heads, 1, 4096));
  flags.push_back(IntFlag(kLimits, "max-tokens", "tokens per sequence (n)", &l->max_tokens, 1, 65536));
  flags.push_back(IntFlag(kLimits, "max-batch", "sequences per pass (B)", &l->max_batch, 1, 4096));
  flags.push_back(IntFlag(kLimits, "max-message-bytes", "bytes per gRPC message (gRPC's receive cap)",
                          &l->max_message_bytes, kKiB, kGrpcMaxBytes, true));
  flags.push_back(IntFlag(kLimits, "max-pass-bytes", "attention (+ gradient) bytes streamed in one pass",
                          &l->max_pass_bytes, kMiB, kPiB, true));
  flags.push_back(IntFlag(kLimits, "max-analyses", "analyses in one pass header", &l->max_analyses,
                          1, 1024));
  flags.push_back(IntFlag(kLimits, "max-rows", "read-out rows of one analysis", &l->max_rows, 1, 65536));
  flags.push_back(IntFlag(kLimits, "max-response-bytes",
                          "estimated size of one response (a protobuf message: < 2 GiB)",
                          &l->max_response_bytes, kMiB, kGrpcMaxBytes, true));
  flags.push_back(DoubleFlag(kLimits, "max-flow-cost", "UNITS",
                             "estimated work units (~ns of one core) of one pass's attention flow",
                             &l->max_flow_cost, 0, 1e18, /*min_open=*/true));
  flags.push_back(DoubleFlag(kLimits, "max-compare-cost", "UNITS",
                             "estimated work units of one comparison of maps (also each audit item)",
                             &l->max_compare_cost, 0, 1e18, /*min_open=*/true));
  {
    Flag f{kMonitoring, "data-dir", "PATH",
           "directory where pinned baselines are stored (created if missing; none: baselines "
           "cannot be pinned)",
           "a path, or none", nullptr, nullptr, "a non-empty path or none"};
    f.current = [c] { return c->data_dir.empty() ? std::string("none") : c->data_dir; };
    f.set = [c](absl::string_view s, std::string*) {
      if (s.empty()) return false;
      c->data_dir = s == "none" ? std::string() : std::string(s);
      return true;
    };
    flags.push_back(std::move(f));
  }
  {
    Flag f{kMonitoring, "monitor-models", "NAME[,...]",
           "model names passes may carry in their monitor tag (metric labels stay bounded), or "
           "none",
           "comma list of up to 32 names of 1-64 [A-Za-z0-9_.-], or none", nullptr, nullptr,
           "a comma list of up to 32 distinct names of 1 to 64 characters [A-Za-z0-9_.-], or none"};
    f.current = [c] {
      return c->monitor_models.empty() ? std::string("none") : absl::StrJoin(c->monitor_models, ",");
    };
    f.set = [c](absl::string_view s, std::string* detail) {
      if (s == "none") {
        c->monitor_models.clear();
        return true;
      }
      std::vector<std::string> names = absl::StrSplit(s, ',');
      if (names.size() > 32) return false;
      std::set<std::string> seen;
      for (const std::string& name : names) {
        if (!ValidModelName(name)) {
          *detail = absl::StrCat("bad name ", Seen(name));
          return false;
        }
        if (!seen.insert(name).second) {
          *detail = absl::StrCat(name, " is listed twice");
          return false;
        }
      }
      c->monitor_models = std::move(names);
      return true;
    };
    flags.push_back(std::move(f));
  }
  flags.push_back(IntFlag(kMonitoring, "monitor-window-samples",
                          "samples (maps) in a model's full count window", &c->monitor_window_samples,
                          2, int64_t{1} << 40));
  flags.push_back(DoubleFlag(kMonitoring, "monitor-window-seconds", "SECONDS",
                             "> 0: a time window of this length instead of the count window",
                             &c->monitor_window_seconds, 0, 30 * kDay));
  flags.push_back(IntFlag(kMonitoring, "monitor-buckets",
                          "buckets of a window (it moves one bucket at a time)", &c->monitor_buckets,
                          2, 1000));
  flags.push_back(IntFlag(kMonitoring, "monitor-max-groups", "group windows per model",
                          &c->monitor_max_groups, 0, 1024));
  flags.push_back(IntFlag(kMonitoring, "monitor-max-map-length", "values of a monitored map",
                          &c->monitor_max_map_length, 1, 1 << 20));
  flags.push_back(IntFlag(kMonitoring, "max-baselines", "baselines stored in --data-dir",
                          &c->max_baselines, 1, 100000));
  {
    Flag f{kLogging, "log-level", "LEVEL", "log lines at or above this level go to stderr",
           "debug|info|warning|error", nullptr, nullptr, "debug, info, warning or error"};
    f.current = [c] { return std::string(LevelName(c->log_level)); };
    f.set = [c](absl::string_view s, std::string*) {
      for (LogLevel level : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
        if (s == LevelName(level)) {
          c->log_level = level;
          return true;
        }
      }
      return false;
    };
    flags.push_back(std::move(f));
  }
  flags.push_back(DoubleFlag(kLogging, "log-lines-per-second", "RATE",
                             "log rate limit (bursts of 4x); lines over it are dropped and counted",
                             &c->log_lines_per_second, 0.1, 1e6));
  flags.push_back(DoubleFlag(kShutdown, "shutdown-grace-seconds", "SECONDS",
                             "time given to passes in flight on SIGTERM/SIGINT",
                             &c->shutdown_grace_seconds, 0, kDay));
  SecurityConfig* t = &c->security;
  flags.push_back(PathFlag(kSecurity, "tls-cert",
                           "gRPC port: TLS with this PEM certificate (chain); needs --tls-key",
                           &t->tls_cert));
  flags.push_back(PathFlag(kSecurity, "tls-key", "gRPC port: the certificate's PEM private key",
                           &t->tls_key));
  flags.push_back(PathFlag(kSecurity, "tls-client-ca",
                           "gRPC port: mutual TLS: clients must present a certificate signed by a "
                           "CA of this PEM bundle",
                           &t->tls_client_ca));
  flags.push_back(IntFlag(kSecurity, "tls-reload-seconds",
                          "seconds between checks of the certificate files and the token file "
                          "for change (rotation without restart; SIGHUP: at once)",
                          &t->tls_reload_seconds, 1, 86400));
  flags.push_back(PathFlag(kSecurity, "metrics-tls-cert",
                           "metrics port: HTTPS with this PEM certificate (chain); needs "
                           "--metrics-tls-key",
                           &t->metrics_tls_cert));
  flags.push_back(PathFlag(kSecurity, "metrics-tls-key", "metrics port: the certificate's PEM key",
                           &t->metrics_tls_key));
  flags.push_back(PathFlag(kSecurity, "metrics-tls-client-ca",
                           "metrics port: scrapers must present a certificate signed by a CA of "
                           "this PEM bundle",
                           &t->metrics_tls_client_ca));
  flags.push_back(PathFlag(kSecurity, "token-file",
                           "bearer tokens, one \"NAME TOKEN\" a line: every RPC but health, "
                           "GetServerInfo and reflection needs \"authorization: Bearer TOKEN\"; NAME "
                           "is the caller's identity",
                           &t->token_file));
  flags.push_back(BoolFlag(kSecurity, "info-requires-auth",
                           "GetServerInfo and reflection need an authenticated caller too "
                           "(health stays open)",
                           &t->info_requires_auth));
  return flags;
}

// The TLS, token and disclosure flags against each other and the addresses.
absl::Status ValidateSecurity(const ServerConfig& c) {
  const SecurityConfig& t = c.security;
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  // A certificate with its key, a client CA only with both: for each port.
  struct Port {
    const char* prefix;
    const std::string &cert, &key, &ca;
  };
  for (const Port& p : {Port{"tls", t.tls_cert, t.tls_key, t.tls_client_ca},
                        Port{"metrics-tls", t.metrics_tls_cert, t.metrics_tls_key,
                             t.metrics_tls_client_ca}}) {
    if (!p.cert.empty() && p.key.empty()) {
      return bad("--", p.prefix, "-cert needs --", p.prefix, "-key (the certificate's private key)");
    }
    if (p.cert.empty() && !p.key.empty()) {
      return bad("--", p.prefix, "-key needs --", p.prefix, "-cert (the key's certificate)");
    }
    if (!p.ca.empty() && p.cert.empty()) {
      return bad("--", p.prefix, "-client-ca needs --", p.prefix, "-cert and --", p.prefix,
                 "-key (client certificates are checked in the TLS handshake)");
    }
  }
  const bool metrics_off = c.metrics_listen.empty() || c.metrics_listen == "none";
  if (t.metrics_tls() && metrics_off) {
    return bad("--metrics-tls-cert: the metrics endpoint is off (--metrics-listen none)");
  }
  if (t.info_requires_auth && !t.tokens() && t.tls_client_ca.empty()) {
    return bad("--info-requires-auth needs --token-file or --tls-client-ca (else no caller could "
               "authenticate)");
  }
  // Bearer tokens in clear text on a network are no protection: gRPC's own
  // clients refuse to send call credentials without TLS for the same reason.
  if (t.tokens() && !t.tls()) {
    for (const std::string& a : c.listen) {
      if (!IsLoopback(a)) {
        return bad("--token-file: tokens would cross the network in clear text on ", a,
                   "; add --tls-cert and --tls-key, or listen on loopback only");
      }
    }
  }
  return absl::OkStatus();
}

// Applies `args` to `*config` without the checks between fields.
absl::StatusOr<FlagsAction> ApplyArgs(const std::vector<std::string>& args, ServerConfig* config) {
  std::vector<Flag> flags = Flags(config);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") return FlagsAction::kHelp;
    if (arg == "--version") return FlagsAction::kVersion;
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument ", Seen(arg), " (flags are --name=value; see --help)"));
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool have_value = eq != std::string::npos;
    if (have_value) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags) {
      if (name == f.name) flag = &f;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (!have_value && flag->boolean) {
      value = "true";
    } else if (!have_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, ": needs a value: ", flag->expected));
      }
      value = args[++i];
    }
    std::string detail;
    if (!flag->set(value, &detail)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": expected ", flag->expected, ", got ", Seen(value),
                       detail.empty() ? "" : absl::StrCat(" (", detail, ")")));
    }
  }
  return FlagsAction::kRun;
}

constexpr absl::string_view kVariablePrefix = "ATTNROLL_";

}  // namespace

bool ValidModelName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return absl::ascii_isalnum(ch) || ch == '_' || ch == '.' || ch == '-';
  });
}

std::string ServerFlagVariable(const std::string& flag_name) {
  std::string v = absl::StrCat(kVariablePrefix, absl::AsciiStrToUpper(flag_name));
  std::replace(v.begin(), v.end(), '-', '_');
  return v;
}

absl::Status ParseServerEnvironment(const std::vector<std::string>& environment,
                                    ServerConfig* config, std::vector<std::string>* warnings) {
  // A name given twice (a broken environment): the first entry, as getenv sees it.
  std::map<std::string, std::string> values;
  for (const std::string& entry : environment) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    const std::string name = entry.substr(0, eq);
    if (!absl::StartsWith(name, kVariablePrefix)) continue;
    values.emplace(name, entry.substr(eq + 1));
  }
  if (values.empty()) return absl::OkStatus();
  std::vector<Flag> flags = Flags(config);
  std::set<std::string> known;
  for (const Flag& f : flags) {
    const std::string variable = ServerFlagVariable(f.name);
    known.insert(variable);
    const auto it = values.find(variable);
    if (it == values.end()) continue;
    std::string detail;
    if (!f.set(it->second, &detail)) {
      return absl::InvalidArgumentError(
          absl::StrCat(variable, " (--", f.name, "): expected ", f.expected, ", got ",
                       Seen(it->second), detail.empty() ? "" : absl::StrCat(" (", detail, ")")));
    }
  }
  if (warnings != nullptr) {
    for (const auto& [name, value] : values) {
      if (known.count(name) == 0) {
        warnings->push_back(absl::StrCat("environment variable ", name,
                                         " names no server flag; ignored (see --help)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<FlagsAction> ParseServerArgs(const std::vector<std::string>& args,
                                            ServerConfig* config) {
  absl::StatusOr<FlagsAction> action = ApplyArgs(args, config);
  if (!action.ok() || *action != FlagsAction::kRun) return action;
  absl::Status valid = ValidateConfig(*config);
  if (!valid.ok()) return valid;
  return FlagsAction::kRun;
}

absl::StatusOr<FlagsAction> ParseServerArgsAndEnvironment(
    const std::vector<std::string>& args, const std::vector<std::string>& environment,
    ServerConfig* config, std::vector<std::string>* warnings) {
  // --help and --version answer whatever the environment holds.
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") return FlagsAction::kHelp;
    if (arg == "--version") return FlagsAction::kVersion;
  }
  absl::Status env = ParseServerEnvironment(environment, config, warnings);
  if (!env.ok()) return env;
  return ParseServerArgs(args, config);
}

absl::Status ValidateConfig(const ServerConfig& c) {
  const PassLimits& l = c.limits;
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (c.workers > 0 && c.long_work_workers > c.workers) {
    return bad("--long-work-workers (", c.long_work_workers, ") must be at most --workers (",
               c.workers, ")");
  }
  if (!(c.keepalive_timeout_seconds < c.keepalive_time_seconds)) {
    return bad("--keepalive-timeout-seconds (", Number(c.keepalive_timeout_seconds),
               ") must be less than --keepalive-time-seconds (", Number(c.keepalive_time_seconds),
               ")");
  }
  if (l.max_message_bytes > l.max_pass_bytes) {
    return bad("--max-message-bytes (", l.max_message_bytes, ") must be at most --max-pass-bytes (",
               l.max_pass_bytes, ")");
  }
  if (l.max_message_bytes > c.grpc_memory_bytes) {
    return bad("--max-message-bytes (", l.max_message_bytes,
               ") must be at most --grpc-memory-bytes (", c.grpc_memory_bytes,
               "): gRPC buffers a whole message");
  }
  if (c.max_passes_per_stream > c.max_passes_per_connection) {
    return bad("--max-passes-per-stream (", c.max_passes_per_stream,
               ") must be at most --max-passes-per-connection (", c.max_passes_per_connection, ")");
  }
  if (c.monitor_window_seconds == 0 && c.monitor_window_samples < c.monitor_buckets) {
    return bad("--monitor-window-samples (", c.monitor_window_samples,
               ") must be at least --monitor-buckets (", c.monitor_buckets, ")");
  }
  if (c.listen.empty()) return bad("--listen: expected at least one address");
  // An address with a fixed port can be listened on once (port 0 is a new
  // free port each time).
  std::set<std::string> fixed;
  auto fixed_port = [](const std::string& a) {
    int port = 0;
    return !absl::SimpleAtoi(absl::string_view(a).substr(a.rfind(':') + 1), &port) || port != 0;
  };
  for (const std::string& a : c.listen) {
    if (fixed_port(a) && !fixed.insert(a).second) return bad("--listen: ", a, " is listed twice");
  }
  if (!c.metrics_listen.empty() && c.metrics_listen != "none" && fixed_port(c.metrics_listen) &&
      fixed.count(c.metrics_listen) > 0) {
    return bad("--metrics-listen: ", c.metrics_listen, " is also a --listen address");
  }
  return ValidateSecurity(c);
}

std::vector<std::string> OpenToTheNetwork(const ServerConfig& c) {
  std::vector<std::string> out;
  if (c.security.tokens() || !c.security.tls_client_ca.empty()) return out;
  for (const std::string& a : c.listen) {
    if (!IsLoopback(a)) out.push_back(a);
  }
  return out;
}

std::string OpenToTheNetworkMessage(const SecurityConfig& t) {
  return t.tls() ? "no --token-file or --tls-client-ca: anyone who can reach this address can call every RPC"
                 : "no TLS and no --token-file: anyone who can reach this address can call every RPC "
                   "and read the attention it carries";
}

bool IsLoopback(const std::string& address) {
  absl::string_view host = absl::string_view(address).substr(0, address.rfind(':'));
  if (host == "localhost" || host == "[::1]") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4) return false;
  for (absl::string_view o : octets) {
    int v;
    if (o.empty() || o.size() > 3 || !std::all_of(o.begin(), o.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(o, &v) || v > 255) {
      return false;
    }
  }
  return octets[0] == "127";
}

std::vector<FlagInfo> ServerFlags() {
  ServerConfig defaults;
  std::vector<FlagInfo> out;
  for (const Flag& f : Flags(&defaults)) {
    std::string value = f.current();
    value = value.substr(0, value.find(" ("));  // "67108864 (64 MiB)" -> "67108864"
    out.push_back({f.group, f.name, f.help, f.range, value, ServerFlagVariable(f.name)});
  }
  return out;
}

std::string ServerUsage() {
  constexpr size_t kColumn = 38;  // where the help text starts
  constexpr size_t kWidth = 100;  // where it wraps
  ServerConfig defaults;
  std::string out =
      "attnroll-server: attention rollout as a gRPC service.\n\n"
      "Usage: attnroll-server [--flag=value | --flag value]...\n\n"
      "Every value is checked at start: a bad one stops the server (exit 2) with a message\n"
      "naming the flag. A flag given more than once: the last one wins.\n\n"
      "Every flag can also be set from the environment, upper case with dashes as underscores\n"
      "after ATTNROLL_: --max-tokens as ATTNROLL_MAX_TOKENS=8192. A flag on the command line\n"
      "wins over its variable; a variable's value gets the flag's checks, and a bad one stops\n"
      "the server (exit 2) naming the variable.\n";
  const char* group = "";
  for (const Flag& f : Flags(&defaults)) {
    if (absl::string_view(f.group) != group) {
      group = f.group;
      absl::StrAppend(&out, "\n", group, ":\n");
    }
    // "  --name METAVAR   help words wrapped at kWidth", then "range; default".
    std::string line = absl::StrCat("  --", f.name, f.metavar[0] != '\0' ? " " : "", f.metavar);
    if (line.size() + 1 >= kColumn) {
      absl::StrAppend(&out, line, "\n");
      line.clear();
    }
    line.resize(kColumn, ' ');
    size_t words = 0;
    for (absl::string_view word : absl::StrSplit(f.help, ' ', absl::SkipEmpty())) {
      if (words > 0 && line.size() + 1 + word.size() > kWidth) {
        absl::StrAppend(&out, line, "\n");
        line.assign(kColumn, ' ');
        words = 0;
      }
      absl::StrAppend(&line, words++ > 0 ? " " : "", word);
    }
    absl::StrAppend(&out, line, "\n");
    line = absl::StrCat(std::string(kColumn, ' '), f.range, ";");
    const std::string current = f.current();
    const std::string default_text = absl::StrCat("default ", current.empty() ? "\"\"" : current);
    if (line.size() + 1 + default_text.size() > kWidth) {
      absl::StrAppend(&out, line, "\n");
      line.assign(kColumn, ' ');
    } else {
      line.push_back(' ');
    }
    absl::StrAppend(&out, line, default_text, "\n");
  }
  absl::StrAppend(&out, "\nOther:\n  --help", std::string(kColumn - 8, ' '), "print this help\n",
                  "  --version", std::string(kColumn - 11, ' '), "print the version\n");
  return out;
}

bool ParseServerFlags(int argc, char** argv, ServerConfig* config, int* exit_code,
                      std::vector<std::string>* warnings) {
  const std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  std::vector<std::string> environment;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) environment.emplace_back(*e);
  absl::StatusOr<FlagsAction> action =
      ParseServerArgsAndEnvironment(args, environment, config, warnings);
  if (!action.ok()) {
    std::fprintf(stderr, "attnroll-server: %s\n", std::string(action.status().message()).c_str());
    *exit_code = 2;
    return false;
  }
  switch (*action) {
    case FlagsAction::kHelp:
      std::fputs(ServerUsage().c_str(), stdout);
      *exit_code = 0;
      return false;
    case FlagsAction::kVersion:
      std::printf("attnroll-server %s\n", ATTNROLL_VERSION);
      *exit_code = 0;
      return false;
    case FlagsAction::kRun:
      break;
  }
  return true;
}

ServerConfig Resolved(ServerConfig config) {
  if (config.workers <= 0) {
    config.workers = UsableCpus();
  }
  if (config.long_work_workers <= 0) config.long_work_workers = std::max(1, config.workers - 1);
  config.long_work_workers = std::min(config.long_work_workers, config.workers);
  if (config.queue_size <= 0) config.queue_size = 1;
  if (config.metrics_listen == "none") config.metrics_listen.clear();
  return config;
}

}  // namespace attnroll::runtime
