#!/usr/bin/env bash
# The sanitizer stages of CI (deploy/test.sh runs them after the Release
# tests; README "Sanitizers and fuzzing"):
#   1. build-asan/: clang, AddressSanitizer + UndefinedBehaviorSanitizer (UB
#      aborts), libFuzzer coverage; the whole ctest suite, end-to-end tests
#      included (they start this tree's attnroll-server and CLI; not the load
#      suite, whose RSS bounds ASan's shadow memory breaks), and every
#      fuzz target's committed corpus replayed;
#   2. the fuzz targets, each fuzzed for ATTNROLL_FUZZ_SECONDS (default 30);
#   3. build-tsan/: clang, ThreadSanitizer; the runtime, session, in-process
#      server (rpc) and client tests (runtime_test session_test rpc_test
#      client_test npy_test render_test) and the canary (tsan_canary: a race
#      on a reactor's state is still reported). Debian's gRPC is not
#      instrumented: the reactors' hand-offs to gRPC are annotated
#      (server/rpc/tsan_handoff.h), gRPC's header code is compiled unchecked
#      (tests/tsan/ignorelist.txt) and the libc calls made inside gRPC's own
#      libraries are ignored (tests/tsan/suppressions.txt).
# Each stage prints a banner and its wall time. Benchmarks are not built
# in these trees. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
export CC=clang-14 CXX=clang++-14
export CMAKE_GENERATOR="${CMAKE_GENERATOR:-Ninja}"  # new trees only, as deploy/build.sh
jobs="$(nproc)"
fuzz_seconds="${ATTNROLL_FUZZ_SECONDS:-30}"
# Sanitizer reports fail the process that makes them; UBSan's abort
# (-fno-sanitize-recover=all), with a stack.
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Leaks inside Debian's own libraries only (tests/asan/lsan_suppressions.txt).
export LSAN_OPTIONS="suppressions=$PWD/tests/asan/lsan_suppressions.txt:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4:suppressions=$PWD/tests/tsan/suppressions.txt"

total_start=$(date +%s)
quiet() { "$@" >/dev/null; }  # a command whose stdout is not wanted
source deploy/stage.sh  # stage NAME COMMAND...

stage "asan+ubsan: configure" quiet cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release \
  -DATTNROLL_SANITIZE=address,undefined -DATTNROLL_BUILD_FUZZERS=ON -DATTNROLL_BUILD_BENCHMARKS=OFF \
  -DATTNROLL_TEST_DIRS=""
stage "asan+ubsan: build" cmake --build build-asan -j"$jobs"
# deploy_runtime_packages is left out: it checks the Release binaries' linked
# libraries (clang's ASan build links more) against the image's packages.
# e2e_load and e2e_monitor are left out: they bound the server's RSS, which ASan's shadow memory
# and quarantine of freed blocks inflate by design.
stage "asan+ubsan: ctest (unit, in-process server, end to end, fuzz corpora)" \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 900 -E '^(e2e_load|e2e_monitor|deploy_runtime_packages)$'
stage "fuzz: every target for ${fuzz_seconds} s" tests/fuzz/run_fuzzers.sh "$fuzz_seconds" build-asan

tsan_tests=(runtime_test session_test rpc_test client_test npy_test render_test tsan_canary)
stage "tsan: configure" quiet cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Release -DATTNROLL_SANITIZE=thread \
  -DATTNROLL_BUILD_BENCHMARKS=OFF "-DATTNROLL_TEST_DIRS=runtime;session;rpc;client"
stage "tsan: build (${tsan_tests[*]})" cmake --build build-tsan -j"$jobs" --target "${tsan_tests[@]}"
# The Python tests of client/ (python_*) use no code of this tree.
stage "tsan: ctest (runtime, session, in-process server, client)" \
  ctest --test-dir build-tsan --output-on-failure -j"$jobs" --timeout 900 -E '^python_'
echo "==== sanitizers: $(( $(date +%s) - total_start )) s in all ===="
