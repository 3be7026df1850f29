#!/usr/bin/env bash
# Fuzzes every target of tests/fuzz for a bounded time and fails on any crash,
# leak, undefined behaviour, timeout or out-of-memory report.
#
#   tests/fuzz/run_fuzzers.sh [SECONDS [BUILD_DIR]]     (defaults: 30, build-asan)
#
# Each target starts from its committed corpus (tests/fuzz/corpus/<target>/,
# read only) and writes what it discovers to a scratch directory; as many
# targets run at once as there are cores. A failing target's log and the
# input that made it fail are kept in BUILD_DIR/fuzz-failures/<target>/
# (reproduce with BUILD_DIR/tests/fuzz/<target>_fuzzer FILE).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-30}"
build="${2:-build-asan}"
targets=(pass_header pass_chunks compare audit npy)
jobs="$(nproc)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failures="$build/fuzz-failures"
rm -rf "$failures"
# UBSan reports abort (the tree is built with -fno-sanitize-recover=all).
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0"

run_one() {
  local t="$1" dir="$scratch/$1"
  mkdir -p "$dir/new" "$dir/artifacts"
  # -timeout: one input taking longer is a failure (a hang); -rss_limit_mb and
  # -malloc_limit_mb: an input making the code ask for that much is one too.
  if "$build/tests/fuzz/${t}_fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
       "$dir/new" "tests/fuzz/corpus/$t" >"$dir/log" 2>&1; then
    echo 0 >"$dir/rc"
  else
    echo 1 >"$dir/rc"
  fi
}

running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

status=0
for t in "${targets[@]}"; do
  dir="$scratch/$t"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)"
  cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$dir/log" | tail -1 || true)"
  found="$(ls "$dir/new" | wc -l)"
  if [ "$(cat "$dir/rc")" = 0 ]; then
    echo "fuzz $t: ok, ${runs:-?} inputs in ${seconds} s, ${cov:-no coverage line}, $found new corpus inputs"
  else
    status=1
    mkdir -p "$failures/$t"
    cp "$dir/log" "$failures/$t/log"
    cp "$dir/artifacts/"* "$failures/$t/" 2>/dev/null || true
    echo "fuzz $t: FAILED (log and input in $failures/$t/)"
    grep -E 'ERROR: |runtime error:|SUMMARY:|fuzz invariant|Test unit written' "$dir/log" | head -20 || true
  fi
done
exit "$status"
