// Server configuration: defaults that work with no flags, and the flag parser.
#ifndef ATTNROLL_SERVER_RUNTIME_CONFIG_H_
#define ATTNROLL_SERVER_RUNTIME_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace attnroll::runtime {

// Per-pass limits: nothing a client sends can make the server go past these.
struct PassLimits {
  int max_layers = 256;
  int max_heads = 256;
  int max_tokens = 8192;
  int max_batch = 64;
  int64_t max_message_bytes = int64_t{64} << 20;  // also gRPC's receive cap
  int64_t max_pass_bytes = int64_t{64} << 30;     // attention bytes streamed in one pass
  // Estimated work units of a pass's attention flow (~1 ns each on one core:
  // 1e11 is about 100 core-seconds; a ViT-B/16 CLS row is ~1e8).
  double max_flow_cost = 1e11;
};

struct ServerConfig {
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9464";  // "" or "none": no metrics endpoint
  int workers = 0;                                  // 0 => number of cores
  int queue_size = 256;                             // tasks waiting for a worker
  int64_t max_memory_bytes = int64_t{4} << 30;      // working memory of all passes
  int max_passes_per_stream = 64;                   // open passes on one ExplainStream
  double shutdown_grace_seconds = 10;
  PassLimits limits;
};

// Parses argv into `config`. Returns false with `*exit_code` set when the
// process should exit (after --help, --version or a bad flag).
bool ParseServerFlags(int argc, char** argv, ServerConfig* config, int* exit_code);

// Resolves defaults that depend on the machine (workers = cores).
ServerConfig Resolved(ServerConfig config);

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_CONFIG_H_
