// The server's flags: every field has one, every value is range-checked
// (nothing wraps), the errors name the flag, the expected range and the value,
// and the constraints between fields are checked in one place.
#include "server/runtime/config.h"

#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/runtime/cpu_budget.h"
#include "tests/testutil/status_matchers.h"

namespace attnroll::runtime {
namespace {

using ::attnroll::testing::IsOk;
using ::attnroll::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Text(int v) { return absl::StrCat(v); }
std::string Text(int64_t v) { return absl::StrCat(v); }
std::string Text(double v) { return absl::StrFormat("%.17g", v); }
std::string Text(const std::string& v) { return v; }
std::string Text(const std::vector<std::string>& v) { return absl::StrJoin(v, ","); }
std::string Text(LogLevel v) { return absl::StrCat(static_cast<int>(v)); }
std::string Text(bool v) { return v ? "true" : "false"; }

using Reader = std::function<std::string(const ServerConfig&)>;
#define FIELD(member) [](const ServerConfig& c) { return Text(c.member); }

enum class Kind { kInt, kNumber, kBool, kOther };

// One row per flag: the field it sets, a good value other than the default
// (with the field's text after it), and values it must refuse; `with`: the
// flags (NAME, VALUE) a good value needs beside it (a certificate needs its
// key), which set their own fields to VALUE.
struct Case {
  std::string flag;
  Kind kind;
  Reader field;
  std::string good;
  std::string good_field;
  std::vector<std::string> bad;
  std::vector<std::pair<std::string, std::string>> with = {};
};

const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      {"listen", Kind::kOther, FIELD(listen), "127.0.0.1:0,[::1]:0,localhost:50051",
       "127.0.0.1:0,[::1]:0,localhost:50051",
       {"", ",", "127.0.0.1:1,", "a:1,,b:2", "127.0.0.1", ":50051", "::1:50051", "[::1]",
        "[::1]50051", "[]:1", "[::1:1", "a:65536", "a:-1", "a:1x", "a:", "a b:1", "a:99999999999"}},
      {"metrics-listen", Kind::kOther, FIELD(metrics_listen), "0.0.0.0:9465", "0.0.0.0:9465",
       {"", "None", "nowhere", "127.0.0.1:70000", "[::1]", ":9464", "a:1,b:2"}},
      {"workers", Kind::kInt, FIELD(workers), "8", "8", {"-1", "1025", "4294967297"}},
      {"long-work-workers", Kind::kInt, FIELD(long_work_workers), "3", "3", {"-1", "1025"}},
      {"queue-size", Kind::kInt, FIELD(queue_size), "1000", "1000", {"0", "1000001", "-5"}},
      {"max-memory-bytes", Kind::kInt, FIELD(max_memory_bytes), "8589934592", "8589934592",
       {"1048575", "0", "1125899906842625", "9223372036854775807", "9223372036854775808"}},
      {"buffer-cache-bytes", Kind::kInt, FIELD(buffer_cache_bytes), "0", "0",
       {"-1", "1125899906842625"}},
      {"max-passes-in-flight", Kind::kInt, FIELD(max_passes_in_flight), "10", "10",
       {"0", "1000001"}},
      {"admission-wait-seconds", Kind::kNumber, FIELD(admission_wait_seconds), "0.5", "0.5",
       {"-0.1", "3600.5", "1e9"}},
      {"client-share", Kind::kNumber, FIELD(client_share), "1", "1", {"0", "-0.5", "1.01", "2"}},
      {"idle-timeout-seconds", Kind::kNumber, FIELD(idle_timeout_seconds), "5", "5",
       {"0", "-1", "86401"}},
      {"stream-idle-timeout-seconds", Kind::kNumber, FIELD(stream_idle_timeout_seconds), "60",
       "60", {"0", "-1", "1e6"}},
      {"max-passes-per-stream", Kind::kInt, FIELD(max_passes_per_stream), "8", "8",
       {"0", "1000001"}},
      {"max-passes-per-connection", Kind::kInt, FIELD(max_passes_per_connection), "100", "100",
       {"0", "1000001"}},
      {"max-concurrent-streams", Kind::kInt, FIELD(max_concurrent_streams), "32", "32",
       {"0", "1000001", "4294967296"}},
      {"keepalive-time-seconds", Kind::kNumber, FIELD(keepalive_time_seconds), "120", "120",
       {"0", "-1", "2147484"}},
      {"keepalive-timeout-seconds", Kind::kNumber, FIELD(keepalive_timeout_seconds), "5", "5",
       {"0", "-1", "2147484"}},
      {"min-client-ping-interval-seconds", Kind::kNumber, FIELD(min_client_ping_interval_seconds),
       "0", "0", {"-1", "2147484"}},
      {"max-connection-idle-seconds", Kind::kNumber, FIELD(max_connection_idle_seconds), "0", "0",
       {"-1", "2147484"}},
      {"max-connection-age-seconds", Kind::kNumber, FIELD(max_connection_age_seconds), "3600",
       "3600", {"-1", "2147484"}},
      {"max-connection-age-grace-seconds", Kind::kNumber, FIELD(max_connection_age_grace_seconds),
       "5", "5", {"-1", "2147484"}},
      {"grpc-memory-bytes", Kind::kInt, FIELD(grpc_memory_bytes), "1073741824", "1073741824",
       {"1048575", "1125899906842625"}},
      {"max-layers", Kind::kInt, FIELD(limits.max_layers), "48", "48", {"0", "4097"}},
      {"max-heads", Kind::kInt, FIELD(limits.max_heads), "32", "32", {"0", "4097"}},
      {"max-tokens", Kind::kInt, FIELD(limits.max_tokens), "65536", "65536",
       {"0", "65537", "4294967297", "-4294967295", "18446744073709551617"}},
      {"max-batch", Kind::kInt, FIELD(limits.max_batch), "1", "1", {"0", "4097"}},
      {"max-message-bytes", Kind::kInt, FIELD(limits.max_message_bytes), "1048576", "1048576",
       {"1023", "2147483648", "4294967296"}},
      {"max-pass-bytes", Kind::kInt, FIELD(limits.max_pass_bytes), "134217728", "134217728",
       {"1048575", "1125899906842625"}},
      {"max-analyses", Kind::kInt, FIELD(limits.max_analyses), "4", "4", {"0", "1025"}},
      {"max-rows", Kind::kInt, FIELD(limits.max_rows), "100", "100", {"0", "65537"}},
      {"max-response-bytes", Kind::kInt, FIELD(limits.max_response_bytes), "2147483647",
       "2147483647", {"1048575", "2147483648"}},
      {"max-flow-cost", Kind::kNumber, FIELD(limits.max_flow_cost), "2e6", "2000000",
       {"0", "-1", "1e19"}},
      {"max-compare-cost", Kind::kNumber, FIELD(limits.max_compare_cost), "1e12", "1000000000000",
       {"0", "-1", "1e19"}},
      {"log-level", Kind::kOther, FIELD(log_level), "debug", "0",
       {"", "DEBUG", "verbose", "warn", "3", "info "}},
      {"log-lines-per-second", Kind::kNumber, FIELD(log_lines_per_second), "0.5", "0.5",
       {"0", "0.09", "-1", "1000001"}},
      {"shutdown-grace-seconds", Kind::kNumber, FIELD(shutdown_grace_seconds), "0", "0",
       {"-1", "86401"}},
      {"tls-cert", Kind::kOther, FIELD(security.tls_cert), "/etc/attnroll/cert.pem",
       "/etc/attnroll/cert.pem", {"a\nb", "a\tb", "-", "--tls-key"}, {{"tls-key", "/k.pem"}}},
      {"tls-key", Kind::kOther, FIELD(security.tls_key), "/etc/attnroll/key.pem",
       "/etc/attnroll/key.pem", {"\x01", "-k"}, {{"tls-cert", "/c.pem"}}},
      {"tls-client-ca", Kind::kOther, FIELD(security.tls_client_ca), "/etc/attnroll/ca.pem",
       "/etc/attnroll/ca.pem", {"\x7f", "--token-file"},
       {{"tls-cert", "/c.pem"}, {"tls-key", "/k.pem"}}},
      {"tls-reload-seconds", Kind::kInt, FIELD(security.tls_reload_seconds), "60", "60",
       {"0", "86401", "-1"}},
      {"metrics-tls-cert", Kind::kOther, FIELD(security.metrics_tls_cert), "/m/cert.pem",
       "/m/cert.pem", {"\r"}, {{"metrics-tls-key", "/m/k.pem"}}},
      {"metrics-tls-key", Kind::kOther, FIELD(security.metrics_tls_key), "/m/key.pem",
       "/m/key.pem", {"\n"}, {{"metrics-tls-cert", "/m/c.pem"}}},
      {"metrics-tls-client-ca", Kind::kOther, FIELD(security.metrics_tls_client_ca), "/m/ca.pem",
       "/m/ca.pem", {"-ca"}, {{"metrics-tls-cert", "/m/c.pem"}, {"metrics-tls-key", "/m/k.pem"}}},
      {"token-file", Kind::kOther, FIELD(security.token_file), "/etc/attnroll/tokens",
       "/etc/attnroll/tokens", {"a\x1b", "-"}},
      {"info-requires-auth", Kind::kBool, FIELD(security.info_requires_auth), "true", "true",
       {"", "yes", "1", "TRUE", "false "}, {{"token-file", "/t"}}},
      {"data-dir", Kind::kOther, FIELD(data_dir), "/var/lib/attnroll", "/var/lib/attnroll", {""}},
      {"monitor-models", Kind::kOther, FIELD(monitor_models), "vit,bert-base,m.v2_x", "vit,bert-base,m.v2_x",
       {"", ",", "a,,b", "a,a", "a b", "x/y", std::string(65, 'm'),
        "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,a1,b1,c1,d1,e1,f1,g1"}},
      {"monitor-window-samples", Kind::kInt, FIELD(monitor_window_samples), "5000", "5000",
       {"1", "0", "1099511627777"}},
      {"monitor-window-seconds", Kind::kNumber, FIELD(monitor_window_seconds), "600", "600",
       {"-1", "2592001"}},
      {"monitor-buckets", Kind::kInt, FIELD(monitor_buckets), "20", "20", {"1", "1001"}},
      {"monitor-max-groups", Kind::kInt, FIELD(monitor_max_groups), "0", "0", {"-1", "1025"}},
      {"monitor-max-map-length", Kind::kInt, FIELD(monitor_max_map_length), "196", "196",
       {"0", "1048577"}},
      {"max-baselines", Kind::kInt, FIELD(max_baselines), "10", "10", {"0", "100001"}},
  };
  return *cases;
}

// Malformed for every flag of a kind.
std::vector<std::string> Malformed(Kind kind) {
  switch (kind) {
    case Kind::kInt:
      return {"", "abc", " 1", "1 ", "1x", "1.5", "0x10", "1e3", "--", "1,2", "+", "-", "inf"};
    case Kind::kNumber:
      return {"", "abc", " 1", "1 ", "1x", "1s", "inf", "-inf", "nan", "1e400", "--", "1,2"};
    case Kind::kBool:
    case Kind::kOther:
      return {};
  }
  return {};
}

// The text of every field, by flag.
std::map<std::string, std::string> Fields(const ServerConfig& c) {
  std::map<std::string, std::string> out;
  for (const Case& k : Cases()) out[k.flag] = k.field(c);
  return out;
}

absl::Status Parse(const std::vector<std::string>& args, ServerConfig* c) {
  absl::StatusOr<FlagsAction> action = ParseServerArgs(args, c);
  if (!action.ok()) return action.status();
  return *action == FlagsAction::kRun ? absl::OkStatus() : absl::InternalError("not kRun");
}

TEST(ConfigTest, EveryFlagHasARowAndEveryRowAFlag) {
  std::set<std::string> flags, rows;
  for (const FlagInfo& f : ServerFlags()) {
    EXPECT_TRUE(flags.insert(f.name).second) << f.name << " twice";
    EXPECT_FALSE(f.help.empty()) << f.name;
    EXPECT_FALSE(f.range.empty()) << f.name;
    EXPECT_FALSE(f.group.empty()) << f.name;
  }
  for (const Case& k : Cases()) rows.insert(k.flag);
  EXPECT_EQ(flags, rows);
  EXPECT_EQ(flags.size(), 53u);
}

TEST(ConfigTest, EveryFlagParsesItsDefault) {
  const std::map<std::string, std::string> defaults = Fields(ServerConfig{});
  for (const FlagInfo& f : ServerFlags()) {
    ServerConfig c;
    ASSERT_THAT(Parse({"--" + f.name + "=" + f.default_value}, &c), IsOk()) << f.name;
    EXPECT_EQ(Fields(c), defaults) << f.name << "=" << f.default_value;
  }
}

TEST(ConfigTest, EveryFlagParsesAGoodValueInBothForms) {
  const std::map<std::string, std::string> defaults = Fields(ServerConfig{});
  for (const Case& k : Cases()) {
    // A true/false flag's second form is the flag alone.
    for (std::vector<std::string> args :
         {std::vector<std::string>{"--" + k.flag + "=" + k.good},
          k.kind == Kind::kBool ? std::vector<std::string>{"--" + k.flag}
                                : std::vector<std::string>{"--" + k.flag, k.good}}) {
      std::map<std::string, std::string> want = defaults;
      for (const auto& [flag, value] : k.with) {
        args.push_back("--" + flag + "=" + value);
        want[flag] = value;
      }
      ServerConfig c;
      ASSERT_THAT(Parse(args, &c), IsOk()) << absl::StrJoin(args, " ");
      want[k.flag] = k.good_field;
      EXPECT_NE(k.good_field, defaults.at(k.flag)) << k.flag << ": pick a value other than the default";
      EXPECT_EQ(Fields(c), want) << absl::StrJoin(args, " ");
    }
  }
}

TEST(ConfigTest, AllGoodValuesTogether) {
  std::vector<std::string> args;
  for (const Case& k : Cases()) args.push_back("--" + k.flag + "=" + k.good);
  ServerConfig c;
  ASSERT_THAT(Parse(args, &c), IsOk());
  for (const Case& k : Cases()) EXPECT_EQ(k.field(c), k.good_field) << k.flag;
}

TEST(ConfigTest, EveryFlagRefusesOutOfRangeAndMalformedValues) {
  for (const Case& k : Cases()) {
    std::vector<std::string> bad = k.bad;
    for (const std::string& m : Malformed(k.kind)) bad.push_back(m);
    ASSERT_FALSE(bad.empty()) << k.flag;
    for (const std::string& value : bad) {
      std::vector<std::vector<std::string>> forms = {{"--" + k.flag + "=" + value}};
      if (k.kind != Kind::kBool) forms.push_back({"--" + k.flag, value});
      for (const std::vector<std::string>& args : forms) {
        ServerConfig c;
        const std::string before = k.field(c);
        EXPECT_THAT(Parse(args, &c),
                    StatusIs(absl::StatusCode::kInvalidArgument,
                             AllOf(StartsWith("--" + k.flag + ": expected "), HasSubstr(", got "))))
            << k.flag << " '" << value << "'";
        EXPECT_EQ(k.field(c), before) << k.flag << " '" << value << "' changed the field";
      }
    }
  }
}

// The bounds printed in --help are the bounds applied: both ends pass, one
// step outside fails (an open end fails at the end itself).
TEST(ConfigTest, RangesInTheHelpAreTheRangesApplied) {
  int checked = 0;
  for (const FlagInfo& f : ServerFlags()) {
    if (f.range.empty() || (f.range[0] != '[' && f.range[0] != '(')) continue;
    const size_t close = f.range.find(']');
    ASSERT_NE(close, std::string::npos) << f.range;
    std::vector<std::string> ends = absl::StrSplit(f.range.substr(1, close - 1), ", ");
    ASSERT_EQ(ends.size(), 2u) << f.name << " " << f.range;
    const bool open_min = f.range[0] == '(';
    const bool integer = ends[0].find_first_of(".e") == std::string::npos &&
                         ends[1].find_first_of(".e") == std::string::npos;
    const Case* row = nullptr;
    for (const Case& k : Cases()) {
      if (k.flag == f.name) row = &k;
    }
    ASSERT_NE(row, nullptr);
    std::vector<std::string> good, bad;
    if (row->kind == Kind::kInt) {
      ASSERT_TRUE(integer) << f.name;
      int64_t lo, hi;
      ASSERT_TRUE(absl::SimpleAtoi(ends[0], &lo) && absl::SimpleAtoi(ends[1], &hi)) << f.range;
      good = {ends[0], ends[1]};
      bad = {absl::StrCat(lo - 1), absl::StrCat(hi + 1)};
    } else {
      double lo, hi;
      ASSERT_TRUE(absl::SimpleAtod(ends[0], &lo) && absl::SimpleAtod(ends[1], &hi)) << f.range;
      good = {ends[1], absl::StrFormat("%.17g", (lo + hi) / 2)};
      if (!open_min) good.push_back(ends[0]);
      bad = {absl::StrFormat("%.17g", hi * (1 + 1e-9) + 1e-9),
             open_min ? ends[0] : absl::StrFormat("%.17g", lo - 1e-6)};
    }
    for (const std::string& v : good) {
      // A keepalive timeout must be less than the keepalive time, whose
      // largest value is the same.
      if (f.name == "keepalive-timeout-seconds" && v == ends[1]) continue;
      ServerConfig c;
      // The bounds of one field can break a constraint between fields; relax
      // the others for this check.
      c.workers = 1024;
      c.keepalive_time_seconds = 2147483;
      c.keepalive_timeout_seconds = 1e-9;
      c.limits.max_pass_bytes = int64_t{1} << 50;
      c.grpc_memory_bytes = int64_t{1} << 50;
      c.limits.max_message_bytes = 1024;
      c.max_passes_per_stream = 1;
      c.max_passes_per_connection = 1000000;
      c.monitor_buckets = 2;
      c.monitor_window_samples = int64_t{1} << 40;
      EXPECT_THAT(Parse({"--" + f.name + "=" + v}, &c), IsOk()) << f.name << "=" << v;
    }
    for (const std::string& v : bad) {
      ServerConfig c;
      EXPECT_THAT(Parse({"--" + f.name + "=" + v}, &c),
                  StatusIs(absl::StatusCode::kInvalidArgument,
                           HasSubstr("--" + f.name + ": expected ")))
          << f.name << "=" << v;
    }
    ++checked;
  }
  // Every flag but --listen, --metrics-listen, --log-level, --data-dir, --monitor-models, the
  // files and --info-requires-auth.
  EXPECT_EQ(checked, 40);
}

TEST(ConfigTest, AValueThatWouldWrapIsRefusedNotNarrowed) {
  ServerConfig c;
  EXPECT_THAT(Parse({"--max-tokens=4294967297"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--max-tokens: expected an integer in [1, 65536], got 4294967297"));
  EXPECT_EQ(c.limits.max_tokens, 8192);
  // Past int64: the parse itself overflows.
  EXPECT_THAT(Parse({"--max-memory-bytes", "99999999999999999999"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--max-memory-bytes: expected an integer in [1048576, 1125899906842624] "
                       "(1 MiB to 1 PiB), got 99999999999999999999"));
  EXPECT_EQ(c.max_memory_bytes, int64_t{4} << 30);
  EXPECT_THAT(Parse({"--workers=-4294967295"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--workers: expected an integer in [0, 1024], got -4294967295"));
}

TEST(ConfigTest, MessagesNameTheFlagTheRangeAndTheValue) {
  ServerConfig c;
  EXPECT_THAT(Parse({"--client-share=0"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--client-share: expected a number in (0, 1], got 0"));
  EXPECT_THAT(Parse({"--idle-timeout-seconds=inf"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--idle-timeout-seconds: expected a number of seconds in (0, 86400], got inf"));
  EXPECT_THAT(Parse({"--max-message-bytes=2147483648"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--max-message-bytes: expected an integer in [1024, 2147483647] (1 KiB to "
                       "2 GiB - 1), got 2147483648"));
  EXPECT_THAT(Parse({"--log-level=verbose"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--log-level: expected debug, info, warning or error, got verbose"));
  // A value with spaces or nothing in it is quoted.
  EXPECT_THAT(Parse({"--max-tokens= 5"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got \" 5\"")));
  EXPECT_THAT(Parse({"--max-tokens="}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("got \"\"")));
  EXPECT_THAT(Parse({"--max-tokens"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--max-tokens: needs a value: an integer in [1, 65536]"));
  EXPECT_THAT(Parse({"--no-such-flag=1"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown flag --no-such-flag (see --help)"));
  EXPECT_THAT(Parse({"8"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument 8")));
  EXPECT_THAT(Parse({"--"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument --")));
}

TEST(ConfigTest, ListenLists) {
  ServerConfig c;
  ASSERT_THAT(Parse({"--listen=0.0.0.0:50051,[::1]:0,[::]:7,my-host.example:0"}, &c), IsOk());
  EXPECT_THAT(c.listen, ElementsAre("0.0.0.0:50051", "[::1]:0", "[::]:7", "my-host.example:0"));
  ASSERT_THAT(Parse({"--listen", "127.0.0.1:65535"}, &c), IsOk());
  EXPECT_THAT(c.listen, ElementsAre("127.0.0.1:65535"));
  // Port 0 twice is two free ports.
  ASSERT_THAT(Parse({"--listen=127.0.0.1:0,127.0.0.1:0"}, &c), IsOk());
  EXPECT_EQ(c.listen.size(), 2u);

  const std::string form =
      "--listen: expected a comma list of HOST:PORT (a non-empty host, a port in [0, 65535], "
      "IPv6 as [::1]:PORT), got ";
  EXPECT_THAT(Parse({"--listen=127.0.0.1:70000"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       form + "127.0.0.1:70000 (port 70000 is not in [0, 65535])"));
  EXPECT_THAT(Parse({"--listen=a:1,::1:2"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       form + "a:1,::1:2 (::1:2: an IPv6 host goes in brackets: [::1]:PORT)"));
  EXPECT_THAT(Parse({"--listen=a:1,,b:2"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(\"\": no :PORT)")));
  EXPECT_THAT(Parse({"--listen=:1"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(empty host)")));
  EXPECT_THAT(c.listen, ElementsAre("127.0.0.1:0", "127.0.0.1:0"));  // untouched by the failures

  ASSERT_THAT(Parse({"--metrics-listen=none"}, &c), IsOk());
  EXPECT_EQ(Resolved(c).metrics_listen, "");
  // Debian 12's civetweb has no IPv6: refused here, not at the endpoint's start.
  EXPECT_THAT(Parse({"--metrics-listen=[::1]:0"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--metrics-listen: expected HOST:PORT (a non-empty host, a port in [0, "
                       "65535], IPv6 as [::1]:PORT) or none, got [::1]:0 (the metrics endpoint "
                       "has no IPv6 (Debian 12's civetweb is built without it))"));
  ASSERT_THAT(Parse({"--metrics-listen=localhost:0"}, &c), IsOk());
  EXPECT_EQ(Resolved(c).metrics_listen, "localhost:0");
  EXPECT_THAT(Parse({"--metrics-listen=localhost"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--metrics-listen: expected HOST:PORT (a non-empty host, a port in [0, "
                       "65535], IPv6 as [::1]:PORT) or none, got localhost (no :PORT)"));
}

TEST(ConfigTest, ConstraintsBetweenFields) {
  struct Bad {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Bad> bad = {
      {{"--workers=4", "--long-work-workers=5"},
       "--long-work-workers (5) must be at most --workers (4)"},
      {{"--keepalive-time-seconds=20", "--keepalive-timeout-seconds=20"},
       "--keepalive-timeout-seconds (20) must be less than --keepalive-time-seconds (20)"},
      {{"--keepalive-time-seconds=10"},
       "--keepalive-timeout-seconds (20) must be less than --keepalive-time-seconds (10)"},
      {{"--max-pass-bytes=1048576"},
       "--max-message-bytes (67108864) must be at most --max-pass-bytes (1048576)"},
      {{"--grpc-memory-bytes=33554432"},
       "--max-message-bytes (67108864) must be at most --grpc-memory-bytes (33554432): gRPC "
       "buffers a whole message"},
      {{"--max-passes-per-connection=32"},
       "--max-passes-per-stream (64) must be at most --max-passes-per-connection (32)"},
      {{"--listen=127.0.0.1:5000,[::1]:0,127.0.0.1:5000"}, "--listen: 127.0.0.1:5000 is listed twice"},
      {{"--listen=127.0.0.1:9464"}, "--metrics-listen: 127.0.0.1:9464 is also a --listen address"},
      {{"--tls-cert=/c.pem"}, "--tls-cert needs --tls-key (the certificate's private key)"},
      {{"--tls-key=/k.pem"}, "--tls-key needs --tls-cert (the key's certificate)"},
      {{"--tls-client-ca=/ca.pem"},
       "--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked in the "
       "TLS handshake)"},
      {{"--metrics-tls-cert=/c.pem"},
       "--metrics-tls-cert needs --metrics-tls-key (the certificate's private key)"},
      {{"--metrics-tls-key=/k.pem", "--tls-cert=/c.pem", "--tls-key=/k.pem"},
       "--metrics-tls-key needs --metrics-tls-cert (the key's certificate)"},
      {{"--metrics-tls-client-ca=/ca.pem"},
       "--metrics-tls-client-ca needs --metrics-tls-cert and --metrics-tls-key (client "
       "certificates are checked in the TLS handshake)"},
      {{"--metrics-listen=none", "--metrics-tls-cert=/c.pem", "--metrics-tls-key=/k.pem"},
       "--metrics-tls-cert: the metrics endpoint is off (--metrics-listen none)"},
      {{"--info-requires-auth"},
       "--info-requires-auth needs --token-file or --tls-client-ca (else no caller could "
       "authenticate)"},
      {{"--info-requires-auth", "--tls-cert=/c.pem", "--tls-key=/k.pem"},
       "--info-requires-auth needs --token-file or --tls-client-ca (else no caller could "
       "authenticate)"},
      {{"--listen=127.0.0.1:0,0.0.0.0:50051", "--token-file=/t"},
       "--token-file: tokens would cross the network in clear text on 0.0.0.0:50051; add "
       "--tls-cert and --tls-key, or listen on loopback only"},
      {{"--listen=[::]:0", "--token-file=/t"},
       "--token-file: tokens would cross the network in clear text on [::]:0; add --tls-cert and "
       "--tls-key, or listen on loopback only"},
      {{"--monitor-window-samples=5"}, "--monitor-window-samples (5) must be at least --monitor-buckets (10)"},
  };
  for (const Bad& b : bad) {
    ServerConfig c;
    EXPECT_THAT(Parse(b.args, &c), StatusIs(absl::StatusCode::kInvalidArgument, b.message))
        << absl::StrJoin(b.args, " ");
  }
  // ... and ValidateConfig alone says the same of a config built in code.
  ServerConfig c;
  EXPECT_THAT(ValidateConfig(c), IsOk());
  c.limits.max_message_bytes = c.limits.max_pass_bytes + 1;
  EXPECT_THAT(ValidateConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--max-pass-bytes")));
  c = ServerConfig{};
  c.listen.clear();
  EXPECT_THAT(ValidateConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--listen")));

  // Fine: workers = usable CPUs (0) with any long-work count, equal values, port 0 twice.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--workers=0", "--long-work-workers=1024"},
           {"--workers=4", "--long-work-workers=4"},
           {"--max-message-bytes=1048576", "--max-pass-bytes=1048576", "--grpc-memory-bytes=1048576"},
           {"--max-passes-per-stream=7", "--max-passes-per-connection=7"},
           {"--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0"},
           // Tokens in clear text on loopback only; anywhere over TLS.
           {"--listen=127.0.0.1:0,[::1]:0,localhost:1,127.8.9.10:2", "--token-file=/t"},
           {"--listen=0.0.0.0:1", "--token-file=/t", "--tls-cert=/c", "--tls-key=/k"},
           {"--tls-cert=/c", "--tls-key=/k", "--tls-client-ca=/ca", "--info-requires-auth"},
           {"--token-file=/t", "--info-requires-auth=true"},
           {"--metrics-tls-cert=/c", "--metrics-tls-key=/k", "--metrics-tls-client-ca=/ca"}}) {
    ServerConfig ok;
    EXPECT_THAT(Parse(args, &ok), IsOk()) << absl::StrJoin(args, " ");
  }
}

TEST(ConfigTest, LoopbackAddressesAndWhatIsOpenToTheNetwork) {
  for (const char* a : {"127.0.0.1:0", "127.255.0.1:50051", "localhost:1", "[::1]:0"}) {
    EXPECT_TRUE(IsLoopback(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50051", "[::]:0", "10.0.0.1:1", "128.0.0.1:1", "127.0.0.1.evil:1",
                        "127.0.0:1", "127.0.0.256:1", "[::ffff:127.0.0.1]:1", "my-host:1",
                        "localhost.example:1"}) {
    EXPECT_FALSE(IsLoopback(a)) << a;
  }
  ServerConfig c;
  c.listen = {"127.0.0.1:0", "0.0.0.0:50051", "[::]:7"};
  EXPECT_THAT(OpenToTheNetwork(c), ElementsAre("0.0.0.0:50051", "[::]:7"));
  EXPECT_EQ(OpenToTheNetworkMessage(c.security),
            "no TLS and no --token-file: anyone who can reach this address can call every RPC and read "
            "the attention it carries");
  // TLS alone encrypts but lets anyone call: still open.
  c.security.tls_cert = "/c";
  c.security.tls_key = "/k";
  EXPECT_THAT(OpenToTheNetwork(c), ElementsAre("0.0.0.0:50051", "[::]:7"));
  EXPECT_EQ(OpenToTheNetworkMessage(c.security),
            "no --token-file or --tls-client-ca: anyone who can reach this address can call every RPC");
  c.security.tls_client_ca = "/ca";  // mutual TLS: callers are authenticated
  EXPECT_THAT(OpenToTheNetwork(c), ElementsAre());
  c.security = {};
  c.security.token_file = "/t";
  EXPECT_THAT(OpenToTheNetwork(c), ElementsAre());
  c = ServerConfig{};
  EXPECT_THAT(OpenToTheNetwork(c), ElementsAre());  // the default: loopback
}

TEST(ConfigTest, TheLastOfTwiceGivenFlagsWins) {
  ServerConfig c;
  ASSERT_THAT(Parse({"--workers=3", "--max-tokens", "10", "--workers", "5"}, &c), IsOk());
  EXPECT_EQ(c.workers, 5);
  EXPECT_EQ(c.limits.max_tokens, 10);
}

TEST(ConfigTest, HelpAndVersion) {
  ServerConfig c;
  EXPECT_EQ(*ParseServerArgs({"--workers=3", "--help"}, &c), FlagsAction::kHelp);
  EXPECT_EQ(*ParseServerArgs({"-h"}, &c), FlagsAction::kHelp);
  EXPECT_EQ(*ParseServerArgs({"--version"}, &c), FlagsAction::kVersion);
  EXPECT_EQ(*ParseServerArgs({}, &c), FlagsAction::kRun);

  const std::string usage = ServerUsage();
  EXPECT_THAT(usage, HasSubstr("Usage: attnroll-server"));
  EXPECT_THAT(usage, HasSubstr("the last one wins"));
  for (const char* group : {"Network:", "Workers:", "Admission and memory:", "Calls and streams:",
                            "Connections (HTTP/2):", "Per-pass limits:", "Logging:", "Shutdown:",
                            "Security (TLS, mutual TLS, tokens):"}) {
    EXPECT_THAT(usage, HasSubstr(group));
  }
  for (const FlagInfo& f : ServerFlags()) {
    EXPECT_THAT(usage, HasSubstr("--" + f.name + " ")) << f.name;
    EXPECT_THAT(usage, HasSubstr(f.range + ";")) << f.name;
    EXPECT_THAT(usage, HasSubstr("default " + f.default_value)) << f.name;
  }
  EXPECT_THAT(usage, HasSubstr("[1, 65536]; default 8192"));
  EXPECT_THAT(usage, HasSubstr("default 67108864 (64 MiB)\n"));
  for (absl::string_view line : absl::StrSplit(usage, '\n')) {
    EXPECT_LE(line.size(), 100u) << line;
  }

  // Through argv: help on stdout, a bad value on stderr with exit code 2.
  std::vector<std::string> storage = {"attnroll-server", "--max-tokens=4294967297"};
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  int exit_code = -1;
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(ParseServerFlags(static_cast<int>(argv.size()), argv.data(), &c, &exit_code, nullptr));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "attnroll-server: --max-tokens: expected an integer in [1, 65536], got 4294967297\n");
  EXPECT_EQ(exit_code, 2);
}

// ---- the environment -------------------------------------------------------

absl::Status ParseEnv(const std::vector<std::string>& env, const std::vector<std::string>& args,
                      ServerConfig* c, std::vector<std::string>* warnings = nullptr) {
  absl::StatusOr<FlagsAction> action = ParseServerArgsAndEnvironment(args, env, c, warnings);
  if (!action.ok()) return action.status();
  return *action == FlagsAction::kRun ? absl::OkStatus() : absl::InternalError("not kRun");
}

TEST(ConfigEnvironmentTest, EveryFlagHasItsVariable) {
  EXPECT_EQ(ServerFlagVariable("max-tokens"), "ATTNROLL_MAX_TOKENS");
  EXPECT_EQ(ServerFlagVariable("listen"), "ATTNROLL_LISTEN");
  EXPECT_EQ(ServerFlagVariable("max-connection-age-seconds"), "ATTNROLL_MAX_CONNECTION_AGE_SECONDS");
  std::set<std::string> variables;
  for (const FlagInfo& f : ServerFlags()) {
    EXPECT_EQ(f.variable, ServerFlagVariable(f.name));
    EXPECT_TRUE(variables.insert(f.variable).second) << f.variable << " twice";
  }
}

TEST(ConfigEnvironmentTest, EveryFlagCanBeSetFromItsVariable) {
  const std::map<std::string, std::string> defaults = Fields(ServerConfig{});
  for (const Case& k : Cases()) {
    ServerConfig c;
    std::vector<std::string> env = {ServerFlagVariable(k.flag) + "=" + k.good};
    std::map<std::string, std::string> want = defaults;
    for (const auto& [flag, value] : k.with) {
      env.push_back(ServerFlagVariable(flag) + "=" + value);
      want[flag] = value;
    }
    ASSERT_THAT(ParseEnv(env, {}, &c), IsOk()) << k.flag;
    want[k.flag] = k.good_field;
    EXPECT_EQ(Fields(c), want) << ServerFlagVariable(k.flag);
  }
  // All of them at once, with other variables around.
  std::vector<std::string> env = {"PATH=/usr/bin", "HOME=/home/attnroll", "attnroll_workers=7"};
  for (const Case& k : Cases()) env.push_back(ServerFlagVariable(k.flag) + "=" + k.good);
  ServerConfig c;
  std::vector<std::string> warnings;
  ASSERT_THAT(ParseEnv(env, {}, &c, &warnings), IsOk());
  for (const Case& k : Cases()) EXPECT_EQ(k.field(c), k.good_field) << k.flag;
  EXPECT_THAT(warnings, ::testing::IsEmpty());
}

TEST(ConfigEnvironmentTest, AFlagWinsOverItsVariable) {
  ServerConfig c;
  ASSERT_THAT(ParseEnv({"ATTNROLL_MAX_TOKENS=100", "ATTNROLL_WORKERS=3"}, {"--max-tokens=200"}, &c),
              IsOk());
  EXPECT_EQ(c.limits.max_tokens, 200);
  EXPECT_EQ(c.workers, 3);
  c = ServerConfig{};
  ASSERT_THAT(ParseEnv({"ATTNROLL_LISTEN=0.0.0.0:50051"}, {"--listen", "127.0.0.1:0"}, &c), IsOk());
  EXPECT_THAT(c.listen, ElementsAre("127.0.0.1:0"));
  c = ServerConfig{};
  ASSERT_THAT(ParseEnv({"ATTNROLL_LISTEN=0.0.0.0:50051,[::]:50051"}, {}, &c), IsOk());
  EXPECT_THAT(c.listen, ElementsAre("0.0.0.0:50051", "[::]:50051"));
  // A name given twice: the first, as getenv sees it.
  c = ServerConfig{};
  ASSERT_THAT(ParseEnv({"ATTNROLL_WORKERS=5", "ATTNROLL_WORKERS=6"}, {}, &c), IsOk());
  EXPECT_EQ(c.workers, 5);
}

TEST(ConfigEnvironmentTest, BadValuesNameTheVariableAndTheFlag) {
  for (const Case& k : Cases()) {
    std::vector<std::string> bad = k.bad;
    for (const std::string& m : Malformed(k.kind)) bad.push_back(m);
    const std::string variable = ServerFlagVariable(k.flag);
    for (const std::string& value : bad) {
      ServerConfig c;
      EXPECT_THAT(ParseEnv({variable + "=" + value}, {}, &c),
                  StatusIs(absl::StatusCode::kInvalidArgument,
                           AllOf(StartsWith(variable + " (--" + k.flag + "): expected "),
                                 HasSubstr(", got "))))
          << variable << "='" << value << "'";
    }
  }
  ServerConfig c;
  EXPECT_THAT(ParseEnv({"ATTNROLL_MAX_TOKENS=4294967297"}, {}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ATTNROLL_MAX_TOKENS (--max-tokens): expected an integer in [1, 65536], got "
                       "4294967297"));
  EXPECT_EQ(c.limits.max_tokens, 8192);
  // Set but empty is a value, and refused like --max-tokens= is.
  EXPECT_THAT(ParseEnv({"ATTNROLL_MAX_TOKENS="}, {}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ATTNROLL_MAX_TOKENS (--max-tokens): expected an integer in [1, 65536], got "
                       "\"\""));
  EXPECT_THAT(ParseEnv({"ATTNROLL_LISTEN=0.0.0.0"}, {}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ATTNROLL_LISTEN (--listen): expected a comma list of HOST:PORT (a non-empty "
                       "host, a port in [0, 65535], IPv6 as [::1]:PORT), got 0.0.0.0 (no :PORT)"));
  // A bad variable stops the server even where a flag would override it: the
  // environment says something wrong about the deployment.
  EXPECT_THAT(ParseEnv({"ATTNROLL_WORKERS=many"}, {"--workers=2"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "ATTNROLL_WORKERS (--workers): expected an integer in [0, 1024], got many"));
}

TEST(ConfigEnvironmentTest, ConstraintsSpanVariablesAndFlags) {
  ServerConfig c;
  EXPECT_THAT(ParseEnv({"ATTNROLL_WORKERS=4"}, {"--long-work-workers=5"}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--long-work-workers (5) must be at most --workers (4)"));
  c = ServerConfig{};
  EXPECT_THAT(ParseEnv({"ATTNROLL_KEEPALIVE_TIME_SECONDS=10"}, {}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "--keepalive-timeout-seconds (20) must be less than "
                       "--keepalive-time-seconds (10)"));
  // ... and a flag can repair what a variable broke.
  c = ServerConfig{};
  EXPECT_THAT(ParseEnv({"ATTNROLL_KEEPALIVE_TIME_SECONDS=10"}, {"--keepalive-timeout-seconds=5"},
                       &c),
              IsOk());
}

TEST(ConfigEnvironmentTest, UnknownVariablesOfThePrefixAreWarnedAboutOthersIgnored) {
  ServerConfig c;
  std::vector<std::string> warnings;
  ASSERT_THAT(ParseEnv({"ATTNROLL_MAX_TOKEN=5", "MAX_TOKENS=5", "ATTNROLL=1", "NOEQUALS",
                        "ATTNROLL_max_tokens=5"},
                       {}, &c, &warnings),
              IsOk());
  EXPECT_EQ(c.limits.max_tokens, 8192);
  EXPECT_THAT(warnings,
              ElementsAre("environment variable ATTNROLL_MAX_TOKEN names no server flag; ignored "
                          "(see --help)",
                          "environment variable ATTNROLL_max_tokens names no server flag; ignored "
                          "(see --help)"));
}

TEST(ConfigEnvironmentTest, HelpAndVersionWhateverTheEnvironment) {
  ServerConfig c;
  EXPECT_EQ(*ParseServerArgsAndEnvironment({"--help"}, {"ATTNROLL_WORKERS=bad"}, &c, nullptr),
            FlagsAction::kHelp);
  EXPECT_EQ(*ParseServerArgsAndEnvironment({"--version"}, {"ATTNROLL_WORKERS=bad"}, &c, nullptr),
            FlagsAction::kVersion);
  const std::string usage = ServerUsage();
  EXPECT_THAT(usage, HasSubstr("--max-tokens as ATTNROLL_MAX_TOKENS=8192"));
  EXPECT_THAT(usage, HasSubstr("A flag on the command line\nwins over its variable"));
  EXPECT_THAT(usage, HasSubstr("naming the variable"));
}

TEST(ConfigEnvironmentTest, ThroughTheProcessEnvironment) {
  ASSERT_EQ(setenv("ATTNROLL_MAX_TOKENS", "4294967297", 1), 0);
  std::vector<std::string> storage = {"attnroll-server"};
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  ServerConfig c;
  int exit_code = -1;
  std::vector<std::string> warnings;
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(ParseServerFlags(static_cast<int>(argv.size()), argv.data(), &c, &exit_code, &warnings));
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "attnroll-server: ATTNROLL_MAX_TOKENS (--max-tokens): expected an integer in [1, "
            "65536], got 4294967297\n");
  EXPECT_EQ(exit_code, 2);

  ASSERT_EQ(setenv("ATTNROLL_MAX_TOKENS", "77", 1), 0);
  c = ServerConfig{};
  EXPECT_TRUE(ParseServerFlags(static_cast<int>(argv.size()), argv.data(), &c, &exit_code, &warnings));
  EXPECT_EQ(c.limits.max_tokens, 77);
  ASSERT_EQ(unsetenv("ATTNROLL_MAX_TOKENS"), 0);
}

TEST(ConfigTest, ResolvedFillsTheMachineDefaults) {
  ServerConfig c;
  const ServerConfig r = Resolved(c);
  EXPECT_EQ(r.workers, UsableCpus());  // affinity and CPU quota (cpu_budget_test.cc)
  EXPECT_EQ(r.long_work_workers, std::max(1, r.workers - 1));
  c.workers = 1;
  EXPECT_EQ(Resolved(c).long_work_workers, 1);
  c.workers = 8;
  c.long_work_workers = 3;
  EXPECT_EQ(Resolved(c).long_work_workers, 3);
  c.workers = 0;
  c.long_work_workers = 1024;  // more than the CPUs: at most the workers
  EXPECT_EQ(Resolved(c).long_work_workers, Resolved(c).workers);
  EXPECT_EQ(Resolved(c).metrics_listen, "127.0.0.1:9464");
}

}  // namespace
}  // namespace attnroll::runtime
