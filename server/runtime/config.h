// Server configuration: defaults a sidecar can live with, every one settable
// by a flag, and the flag parser (every value range-checked at start: a bad
// value stops the server with a message naming the flag, never wraps).
#ifndef ATTNROLL_SERVER_RUNTIME_CONFIG_H_
#define ATTNROLL_SERVER_RUNTIME_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnroll::runtime {

// Per-pass limits: nothing a client sends can make the server go past these.
struct PassLimits {
  int max_layers = 256;
  int max_heads = 256;
  int max_tokens = 8192;
  int max_batch = 64;
  int64_t max_message_bytes = int64_t{64} << 20;  // also gRPC's receive cap
  int64_t max_pass_bytes = int64_t{64} << 30;     // attention (+ gradient) bytes of one pass
  int max_analyses = 16;                          // analyses in one pass header
  int max_rows = 1024;                            // read-out rows of one analysis
  int64_t max_response_bytes = int64_t{256} << 20;  // estimated size of one response
  // Estimated work units of a pass's attention flow (~1 ns each on one core:
  // 1e11 is about 100 core-seconds; a ViT-B/16 CLS row is ~1e8).
  double max_flow_cost = 1e11;
  // Estimated work units of one comparison of maps (SSIM, EMD, ranks), the
  // same units; also bounds each audit item.
  double max_compare_cost = 1e10;
};

// TLS, mutual TLS and bearer tokens (README "Security"). Empty paths: off.
// Certificate and key files are PEM; each file is re-read when it changes.
struct SecurityConfig {
  // The gRPC port: TLS with this certificate (chain) and key; with a client
  // CA, every client must present a certificate it signed (mutual TLS).
  std::string tls_cert, tls_key, tls_client_ca;
  // How often certificate files and the token file are checked for change
  // (SIGHUP: the token file and the metrics port's files at once).
  int tls_reload_seconds = 10;
  // The metrics port, separately.
  std::string metrics_tls_cert, metrics_tls_key, metrics_tls_client_ca;
  // "NAME TOKEN" lines (runtime/token_table.h): every RPC but health,
  // GetServerInfo and reflection needs "authorization: Bearer TOKEN"; the
  // name is the caller's identity.
  std::string token_file;
  // GetServerInfo and reflection need an authenticated caller too.
  bool info_requires_auth = false;

  bool tls() const { return !tls_cert.empty(); }
  bool metrics_tls() const { return !metrics_tls_cert.empty(); }
  bool tokens() const { return !token_file.empty(); }
};

// Log lines at or above this level are written (stderr).
enum class LogLevel { kDebug, kInfo, kWarning, kError };

struct ServerConfig {
  // gRPC listen addresses HOST:PORT (port 0 picks a free port).
  std::vector<std::string> listen = {"127.0.0.1:50051"};
  std::string metrics_listen = "127.0.0.1:9464";  // "" (after "none"): no metrics endpoint
  int workers = 0;                                  // 0 => UsableCpus()
  // Long work (flow's max flows, large comparisons, audit items) runs on at
  // most this many workers at once, so small passes always find one.
  // 0 => max(1, workers - 1).
  int long_work_workers = 0;
  int queue_size = 256;                             // new passes and calls waiting for a worker
  int64_t max_memory_bytes = int64_t{4} << 30;      // working memory of all passes
  // Large buffers of finished passes kept for the next ones (no page faults
  // when reused); outside max_memory_bytes. 0: none kept.
  int64_t buffer_cache_bytes = int64_t{512} << 20;
  int max_passes_in_flight = 64;                    // admitted passes and calls at once
  double admission_wait_seconds = 0.1;              // a new pass waits this long for room
  // One client identity may hold at most this share of the passes in flight
  // and of the memory budget (1 = no limit).
  double client_share = 0.5;
  // A call that holds a pass (or has sent nothing yet) and receives nothing
  // for this long is ended and its memory freed.
  double idle_timeout_seconds = 30;
  // An ExplainStream or Audit call with nothing open, idle this long, ends.
  double stream_idle_timeout_seconds = 300;
  int max_passes_per_stream = 64;                   // open passes on one ExplainStream
  int max_passes_per_connection = 256;              // open passes of one connection
  int max_concurrent_streams = 128;                 // HTTP/2 streams per connection
  double keepalive_time_seconds = 60;               // server pings idle connections
  double keepalive_timeout_seconds = 20;            // ... and closes them without an answer
  double min_client_ping_interval_seconds = 10;     // clients pinging faster are closed
  double max_connection_idle_seconds = 600;         // 0: never closed for idleness
  double max_connection_age_seconds = 0;            // 0: unlimited (set it in a pool)
  double max_connection_age_grace_seconds = 30;
  int64_t grpc_memory_bytes = int64_t{256} << 20;   // gRPC's own buffers (resource quota)
  double shutdown_grace_seconds = 10;
  // Live monitoring (docs/conventions.md, "Live monitoring"). Baselines are
  // stored under data_dir ("": no storage; pinning is refused).
  std::string data_dir;
  std::vector<std::string> monitor_models;          // names a pass may carry; empty: no monitoring
  int64_t monitor_window_samples = 1000;            // count window: samples in a full window
  double monitor_window_seconds = 0;                // > 0: a time window of this length instead
  int monitor_buckets = 10;                         // the window moves a bucket at a time
  int monitor_max_groups = 16;                      // group windows per model
  int monitor_max_map_length = 16384;               // values per monitored map
  int max_baselines = 256;                          // stored baselines
  LogLevel log_level = LogLevel::kInfo;
  double log_lines_per_second = 20;                 // rate limit (bursts of 4x)
  PassLimits limits;
  SecurityConfig security;
};

// Parses the process's environment (`environ`, see ParseServerEnvironment)
// and then argv into `config`. Returns false with `*exit_code` set when the
// process should exit: 0 after --help or --version (printed on stdout), 2
// after a bad flag, variable or value (the message, naming the flag or the
// variable, on stderr). Warnings about the environment (a variable that
// names no flag) are appended to `*warnings` for the caller to log.
bool ParseServerFlags(int argc, char** argv, ServerConfig* config, int* exit_code,
                      std::vector<std::string>* warnings);

// The parser behind ParseServerFlags, printing nothing. `args` is argv
// without the program name; each `--flag=value` or `--flag value` is applied
// to `*config` in order (a flag given twice: the last one wins), then the
// result is checked with ValidateConfig. A bad flag or value is
// INVALID_ARGUMENT: "--max-tokens: expected an integer in [1, 65536], got
// 4294967297". --help and --version stop the parse and say so.
enum class FlagsAction { kRun, kHelp, kVersion };
absl::StatusOr<FlagsAction> ParseServerArgs(const std::vector<std::string>& args,
                                            ServerConfig* config);

// Every flag can also be set from the environment: --max-tokens as
// ATTNROLL_MAX_TOKENS (ServerFlagVariable), with the same checks. `environment`
// holds "NAME=value" entries (as `environ` does); the variables are applied to
// `*config` in --help order and each bad value is INVALID_ARGUMENT naming the
// variable and its flag: "ATTNROLL_MAX_TOKENS (--max-tokens): expected an
// integer in [1, 65536], got 4294967297". An empty value is a value (and
// refused where the flag refuses it). Variables outside the ATTNROLL_ prefix
// are ignored; an ATTNROLL_ variable that names no flag is not an error (the
// clients and tools share the prefix) but is reported in `*warnings`.
// Constraints between fields are not checked here: ParseServerArgsAndEnvironment
// checks them once flags have been applied on top.
absl::Status ParseServerEnvironment(const std::vector<std::string>& environment,
                                    ServerConfig* config, std::vector<std::string>* warnings);

// The environment first, then the flags (a flag on the command line wins over
// its variable), then ValidateConfig once.
absl::StatusOr<FlagsAction> ParseServerArgsAndEnvironment(
    const std::vector<std::string>& args, const std::vector<std::string>& environment,
    ServerConfig* config, std::vector<std::string>* warnings);

// The variable of a flag: "max-tokens" -> "ATTNROLL_MAX_TOKENS".
std::string ServerFlagVariable(const std::string& flag_name);

// The constraints between fields (each field's own range is checked when its
// flag is parsed): long work workers <= workers when both are set, keepalive
// timeout < keepalive time, max message bytes <= max pass bytes and <= gRPC's
// memory, passes per stream <= passes per connection, no address listened on
// twice; TLS files in pairs (a certificate with its key, a client CA only
// with both), metrics TLS only with a metrics address, --info-requires-auth
// only with a way to authenticate, tokens off loopback only over TLS.
// INVALID_ARGUMENT naming the flags.
absl::Status ValidateConfig(const ServerConfig& config);

// True for a HOST:PORT whose host is a loopback address: "localhost",
// 127.0.0.0/8 written as an IPv4 address, "[::1]". Anything else (0.0.0.0,
// [::], a name) may be reachable from elsewhere.
bool IsLoopback(const std::string& address);

// The listen addresses anyone who can reach them may call: not loopback, and
// no caller authentication (neither --token-file nor --tls-client-ca). The
// server warns about each at start.
std::vector<std::string> OpenToTheNetwork(const ServerConfig& config);
// What the warning for such an address says is exposed (with or without TLS).
std::string OpenToTheNetworkMessage(const SecurityConfig& security);

// A name of --monitor-models: 1 to 64 characters of [A-Za-z0-9_.-].
bool ValidModelName(absl::string_view name);

// One flag as --help shows it.
struct FlagInfo {
  std::string group;          // "Per-pass limits", ...
  std::string name;           // "max-tokens" (no dashes)
  std::string help;
  std::string range;          // "[1, 65536]", "(0, 1]", "debug|info|warning|error", ...
  std::string default_value;  // as the flag would take it: "8192"
  std::string variable;       // the environment variable: "ATTNROLL_MAX_TOKENS"
};
// Every flag, in --help order, with the defaults of a default ServerConfig.
std::vector<FlagInfo> ServerFlags();
// The --help text.
std::string ServerUsage();

// Resolves defaults that depend on the machine (workers = UsableCpus(), long work
// workers = max(1, workers - 1) and at most workers, "none" metrics).
ServerConfig Resolved(ServerConfig config);

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_CONFIG_H_
