// attnroll-server: flags -> config -> run until SIGTERM/SIGINT (SIGHUP: re-read
// the token and certificate files now).
#include <malloc.h>
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/runtime/config.h"
#include "server/runtime/logging.h"
#include "server/rpc/server.h"

namespace {

pthread_t g_main_thread;

// A thread started before main blocked the signals (OpenBLAS starts its pool
// when the library loads) can still be handed SIGTERM, SIGINT or SIGHUP by the
// kernel, whose default action would end the process at once (SIGTERM: killed,
// not exit 0). Such a thread runs this handler instead, which passes the signal
// on to the main thread, where it is blocked and taken by sigwait.
extern "C" void ForwardToMainThread(int sig) { pthread_kill(g_main_thread, sig); }

}  // namespace

int main(int argc, char** argv) {
#if defined(__x86_64__) && defined(__AVX2__)
  // Built for x86-64-v3 (see CMakeLists.txt): refuse clearly on an older CPU
  // instead of dying of SIGILL somewhere in the math.
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::fprintf(stderr,
                 "attnroll-server: this build needs AVX2 and FMA (x86-64-v3); rebuild with "
                 "cmake -DATTNROLL_MARCH= for this CPU\n");
    return 1;
  }
#endif
  attnroll::runtime::ServerConfig config;
  int exit_code = 0;
  std::vector<std::string> warnings;
  if (!attnroll::runtime::ParseServerFlags(argc, argv, &config, &exit_code, &warnings)) {
    return exit_code;
  }
  using attnroll::runtime::LogLifecycle;
  using attnroll::runtime::LogLevel;
  // From here on every line on stderr goes through the logger. It lives until
  // the process exits (threads of gRPC may log while statics are destroyed).
  attnroll::runtime::SetLogger(
      new attnroll::runtime::Logger(config.log_level, config.log_lines_per_second));
  for (const std::string& w : warnings) LogLifecycle(LogLevel::kWarning, w);

  // Large buffers (a layer's matrices, whole passes) come straight from the
  // OS and go back to it when freed: glibc's adaptive threshold would keep
  // them in the heap after the first large free, and the process's memory
  // would stay at its peak after a burst.
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  // Smaller buffers (gRPC's read slices, the messages' bytes) stay in the
  // heap between passes instead of each free() handing the top of the heap
  // back and the next pass faulting it in again; the server gives free pages
  // back once it has been idle for a second (rpc::Server's IdleTrim).
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // One malloc arena per worker (at least 2) instead of glibc's 8 per core.
  // Layer messages (about 1 MB each) pass between gRPC's threads and the
  // workers; spread over many arenas, each keeping its own free chunks, they
  // held the RSS of a steady load about a third higher and made it wander by
  // tens of MiB (the soak of tests/e2e/load_test.py), at no gain in passes/s.
  mallopt(M_ARENA_MAX, std::max(2, attnroll::runtime::Resolved(config).workers));

  // Block the signals before any thread starts, so only sigwait below sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // After the block, so the main thread itself never runs the handler.
  g_main_thread = pthread_self();
  struct sigaction forward = {};
  forward.sa_handler = ForwardToMainThread;
  sigemptyset(&forward.sa_mask);
  forward.sa_flags = SA_RESTART;
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &forward, nullptr);

  auto server = attnroll::rpc::Server::Start(config);
  if (!server.ok()) {
    // A wrong file of the configuration is a usage error, like a bad flag.
    if (absl::IsInvalidArgument(server.status())) {
      std::fprintf(stderr, "attnroll-server: %s\n", std::string(server.status().message()).c_str());
      return 2;
    }
    LogLifecycle(LogLevel::kError, "start failed", {{"message", server.status().ToString()}});
    return 1;
  }
  const auto& c = (*server)->config();
  std::string metrics = "none";
  if ((*server)->metrics_port() != 0) {
    metrics = c.metrics_listen.substr(0, c.metrics_listen.rfind(':') + 1) +
              std::to_string((*server)->metrics_port());
  }
  // The first line on stdout says where it listens, ports resolved:
  // "attnroll-server listening grpc=127.0.0.1:50051[,[::1]:50052] metrics=127.0.0.1:9464|none".
  std::vector<std::string> grpc;
  for (size_t i = 0; i < c.listen.size(); ++i) {
    grpc.push_back(c.listen[i].substr(0, c.listen[i].rfind(':') + 1) +
                   std::to_string((*server)->ports()[i]));
  }
  std::printf("attnroll-server listening grpc=%s metrics=%s\n", absl::StrJoin(grpc, ",").c_str(),
              metrics.c_str());
  std::fflush(stdout);
  LogLifecycle(LogLevel::kInfo, "attnroll-server started",
               {{"version", ATTNROLL_VERSION},
                {"listen", absl::StrJoin(grpc, ",")},
                {"metrics", metrics},
                {"workers", c.workers},
                {"long_work_workers", c.long_work_workers},
                {"queue_size", c.queue_size},
                {"memory_budget_bytes", c.max_memory_bytes},
                {"max_passes_in_flight", c.max_passes_in_flight},
                {"log_level", attnroll::runtime::LogLevelName(c.log_level)},
                {"log_lines_per_second", c.log_lines_per_second}});

  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    LogLifecycle(LogLevel::kInfo, "SIGHUP: checking the token and certificate files");
    (*server)->Reload();
  }
  // Shutdown: health goes NOT_SERVING and new passes are refused, calls in
  // flight get the grace period, then the worker pool runs what is queued and
  // joins.
  const double grace = c.shutdown_grace_seconds;
  LogLifecycle(LogLevel::kInfo, "shutting down",
               {{"signal", sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "other"},
                {"grace_seconds", grace}});
  const absl::Time start = absl::Now();
  (*server)->Shutdown(absl::Seconds(grace));
  LogLifecycle(LogLevel::kInfo, "grpc server stopped",
               {{"seconds", absl::ToDoubleSeconds(absl::Now() - start)}});
  (*server)->StopForExit();
  LogLifecycle(LogLevel::kInfo, "stopped");
  std::fflush(nullptr);
  std::_Exit(0);
}
