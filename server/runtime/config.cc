#include "server/runtime/config.h"

#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace attnroll::runtime {
namespace {

struct Flag {
  const char* name;
  const char* help;
  std::function<std::string()> current;
  std::function<bool(const std::string&)> set;
};

template <typename T>
Flag IntFlag(const char* name, const char* help, T* value) {
  return {name, help, [value] { return std::to_string(*value); },
          [value](const std::string& s) {
            int64_t v;
            if (!absl::SimpleAtoi(s, &v) || v < 0) return false;
            *value = static_cast<T>(v);
            return true;
          }};
}

Flag StringFlag(const char* name, const char* help, std::string* value) {
  return {name, help, [value] { return *value; },
          [value](const std::string& s) {
            *value = s;
            return true;
          }};
}

std::vector<Flag> Flags(ServerConfig* c) {
  return {
      {"listen", "gRPC listen addresses HOST:PORT[,HOST:PORT...] (port 0 picks a free port)",
       [c] { return absl::StrJoin(c->listen, ","); },
       [c](const std::string& s) {
         c->listen = absl::StrSplit(s, ',', absl::SkipEmpty());
         return !c->listen.empty();
       }},
      StringFlag("metrics-listen", "Prometheus /metrics address HOST:PORT, or none", &c->metrics_listen),
      IntFlag("workers", "worker threads for decoding and math (0 = cores)", &c->workers),
      IntFlag("queue-size", "tasks that may wait for a worker before RESOURCE_EXHAUSTED", &c->queue_size),
      IntFlag("max-memory-bytes", "working memory of all passes in flight", &c->max_memory_bytes),
      IntFlag("max-passes-per-stream", "open passes on one ExplainStream", &c->max_passes_per_stream),
      IntFlag("max-layers", "layers per pass", &c->limits.max_layers),
      IntFlag("max-heads", "heads per layer", &c->limits.max_heads),
      IntFlag("max-tokens", "tokens per sequence (n)", &c->limits.max_tokens),
      IntFlag("max-batch", "sequences per pass (B)", &c->limits.max_batch),
      IntFlag("max-message-bytes", "bytes per gRPC message", &c->limits.max_message_bytes),
      IntFlag("max-pass-bytes", "attention bytes streamed in one pass", &c->limits.max_pass_bytes),
      {"max-flow-cost", "estimated work units (~ns of one core) of one pass's attention flow",
       [c] { return absl::StrFormat("%g", c->limits.max_flow_cost); },
       [c](const std::string& s) {
         return absl::SimpleAtod(s, &c->limits.max_flow_cost) && c->limits.max_flow_cost >= 0;
       }},
      {"shutdown-grace-seconds", "time given to passes in flight on SIGTERM/SIGINT",
       [c] { return absl::StrFormat("%g", c->shutdown_grace_seconds); },
       [c](const std::string& s) {
         return absl::SimpleAtod(s, &c->shutdown_grace_seconds) && c->shutdown_grace_seconds >= 0;
       }},
  };
}

void PrintUsage(const std::vector<Flag>& flags) {
  std::printf(
      "attnroll-server: attention rollout as a gRPC service.\n\n"
      "Usage: attnroll-server [--flag=value | --flag value]...\n\n");
  for (const Flag& f : flags) {
    std::printf("  --%-24s %s (default %s)\n", f.name, f.help, f.current().c_str());
  }
  std::printf("  --%-24s %s\n  --%-24s %s\n", "help", "print this help", "version",
              "print the version");
}

}  // namespace

bool ParseServerFlags(int argc, char** argv, ServerConfig* config, int* exit_code) {
  std::vector<Flag> flags = Flags(config);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(flags);
      *exit_code = 0;
      return false;
    }
    if (arg == "--version") {
      std::printf("attnroll-server %s\n", ATTNROLL_VERSION);
      *exit_code = 0;
      return false;
    }
    if (arg.rfind("--", 0) != 0) {
      std::fprintf(stderr, "attnroll-server: unexpected argument '%s' (see --help)\n", arg.c_str());
      *exit_code = 2;
      return false;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    bool have_value = eq != std::string::npos;
    if (have_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags) {
      if (name == f.name) flag = &f;
    }
    if (flag == nullptr) {
      std::fprintf(stderr, "attnroll-server: unknown flag --%s (see --help)\n", name.c_str());
      *exit_code = 2;
      return false;
    }
    if (!have_value) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "attnroll-server: --%s needs a value\n", name.c_str());
        *exit_code = 2;
        return false;
      }
      value = argv[++i];
    }
    if (!flag->set(value)) {
      std::fprintf(stderr, "attnroll-server: bad value '%s' for --%s\n", value.c_str(), name.c_str());
      *exit_code = 2;
      return false;
    }
  }
  return true;
}

ServerConfig Resolved(ServerConfig config) {
  if (config.workers <= 0) {
    config.workers = std::max(1u, std::thread::hardware_concurrency());
  }
  if (config.queue_size <= 0) config.queue_size = 1;
  if (config.metrics_listen == "none") config.metrics_listen.clear();
  return config;
}

}  // namespace attnroll::runtime
