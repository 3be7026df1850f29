#!/usr/bin/env bash
# One benchmark report, measured in one go on this machine: the machine's
# bounds (read bandwidth of one core, sgemm of OpenBLAS and Eigen on one
# core), attnroll's passes from wire bytes (tests/bench/rollout_bench, Google
# Benchmark), the in-process peers on the same shapes (tests/bench/peers.py:
# numpy and torch, full chain and row-only, one thread), and the service end
# to end (`attnroll bench` against a real attnroll-server on 127.0.0.1: rollout
# against the validate-only ceiling, and one fp32 pass through the C++ client,
# encoded beforehand and from arrays in memory with the heads fused in the
# call, against the copy cost of its bytes). Writes a Markdown report (medians, % of
# bound, ratios to the peers, the load average around every step).
# Builds nothing: build first (cmake --build build). Run it under the shared
# lock on a shared machine: flock /work/.heavy.lock tests/bench/run_benchmarks.sh
#
# Usage: tests/bench/run_benchmarks.sh [--quick] [--with-causal] [--repetitions N]
#                                      [--duration S] [--out FILE]
#   BUILD_DIR       build directory (default: build)
#   PREVIOUS_BENCH  optional: a rollout_bench built from an earlier commit (named
#                   in the report by PREVIOUS_LABEL); its
#                   pass cases that this one also has run right after, and the
#                   report adds their medians and the speed-up over them
#   --quick         a smoke run of a few seconds (tiny cases, 1 repetition, 1 s of
#                   load): checks that every step works; its numbers mean nothing
#   --with-causal   also the causal 32x32x2048 shape (attnroll ~1 min, peers ~2 min)
#   --repetitions N repetitions of each rollout_bench case (default 5)
#   --duration S    seconds of each `attnroll bench` run (default 10)
#   --out FILE      write the report there too (default: stdout only)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
PYTHON=/usr/bin/python3
quick=0; with_causal=0; repetitions=5; duration=10; out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --with-causal) with_causal=1 ;;
    --repetitions) repetitions="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_benchmarks.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
for bin in tests/bench/rollout_bench attnroll attnroll-server; do
  if [ ! -x "$BUILD_DIR/$bin" ]; then
    echo "run_benchmarks.sh: $BUILD_DIR/$bin not found: build first (cmake --build $BUILD_DIR)" >&2
    exit 1
  fi
done

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
step() { echo "== $*" >&2; }
# Every step's load average before and after, one line each: name|before|after.
record() { echo "$1|$2|$(loadavg)" >> "$tmp/load.txt"; }

# 1. Google Benchmarks (probes and passes).
bench_args=(--benchmark_repetitions="$repetitions" --benchmark_display_aggregates_only=true
            --benchmark_out="$tmp/rollout.json" --benchmark_out_format=json)
if [ "$quick" -eq 1 ]; then
  bench_args=(--benchmark_filter='^(pass/vit_b16_cls/fp32|pass/vit_b16_per_layer/fp32|probe/(sgemm_openblas/512|read_bandwidth))(/|$)'
              --benchmark_min_time=0.01 --benchmark_out="$tmp/rollout.json" --benchmark_out_format=json)
else
  # Google Benchmark's regex has no look-ahead: list the cases instead.
  cases="$("$BUILD_DIR/tests/bench/rollout_bench" --benchmark_list_tests | grep -E '^(pass|probe)/' || true)"
  [ "$with_causal" -eq 0 ] && cases="$(echo "$cases" | grep -v causal)"
  filter="^($(echo "$cases" | sed 's/[.]/\\./g' | paste -sd'|'))\$"
  bench_args+=(--benchmark_filter="$filter")
fi
step "rollout_bench"
before="$(loadavg)"
"$BUILD_DIR/tests/bench/rollout_bench" "${bench_args[@]}" >&2
record rollout_bench "$before"
if [ -n "${PREVIOUS_BENCH:-}" ]; then
  step "previous rollout_bench ($PREVIOUS_BENCH)"
  ours="$("$BUILD_DIR/tests/bench/rollout_bench" --benchmark_list_tests | grep -E '^pass/' | sed 's:/\(min_time\|iterations\|repeats\|real_time\).*::')"
  theirs="$("$PREVIOUS_BENCH" --benchmark_list_tests | grep -E '^pass/' | sed 's:/\(min_time\|iterations\|repeats\|real_time\).*::')"
  common="$(comm -12 <(echo "$ours" | sort -u) <(echo "$theirs" | sort -u))"
  [ "$with_causal" -eq 0 ] && common="$(echo "$common" | grep -v causal || true)"
  [ "$quick" -eq 1 ] && common="$(echo "$common" | grep -E '^pass/vit_b16_cls/fp32$' || true)"
  if [ -n "$common" ]; then
    prev_args=(--benchmark_out="$tmp/previous.json" --benchmark_out_format=json
               --benchmark_filter="^($(echo "$common" | sed 's/[.]/\\./g' | paste -sd'|'))(/|\$)")
    if [ "$quick" -eq 1 ]; then
      prev_args+=(--benchmark_min_time=0.01)
    else
      prev_args+=(--benchmark_repetitions="$repetitions" --benchmark_display_aggregates_only=true)
    fi
    before="$(loadavg)"
    "$PREVIOUS_BENCH" "${prev_args[@]}" >&2
    record previous_rollout_bench "$before"
  fi
fi

# 2. The in-process peers.
step "peers (numpy, torch; 1 thread)"
peer_args=(--repeats "$repetitions" --threads 1)
if [ "$quick" -eq 1 ]; then
  peer_args=(--repeats 1 --threads 1 --only vit_b16)
elif [ "$with_causal" -eq 0 ]; then
  peer_args+=(--only vit_b16 bert_base vit_l16)
fi
before="$(loadavg)"
"$PYTHON" tests/bench/peers.py "${peer_args[@]}" > "$tmp/peers.json"
record peers "$before"

# 3. The service: a real server on 127.0.0.1 (an ephemeral port), 2 workers.
step "attnroll bench through attnroll-server"
"$BUILD_DIR/attnroll-server" --listen 127.0.0.1:0 --metrics-listen none --log-level warning \
  > "$tmp/server.out" 2> "$tmp/server.err" &
server_pid=$!
for _ in $(seq 100); do
  grep -q "listening" "$tmp/server.out" 2>/dev/null && break
  sleep 0.1
done
addr="$(sed -n 's/.*listening grpc=\([^ ,]*\).*/\1/p' "$tmp/server.out" | head -1)"
if [ -z "$addr" ]; then
  echo "run_benchmarks.sh: the server did not start:" >&2
  cat "$tmp/server.err" >&2
  exit 1
fi
d="$duration"; w=1
[ "$quick" -eq 1 ] && { d=0.3; w=0; }
run_bench() {  # name, then attnroll bench arguments
  local name="$1"; shift
  local before
  before="$(loadavg)"
  "$BUILD_DIR/attnroll" --server "$addr" bench "$@" --json > "$tmp/bench_$name.json"
  record "bench_$name" "$before"
}
for c in 2 8; do
  for method in rollout null; do
    run_bench "${method}_c$c" --shape 12,12,197 --wire fp16 --method "$method" --concurrency "$c" \
      --duration "$d" --warmup "$w"
  done
done
# One fp32 pass at a time through the C++ client, encoded beforehand.
run_bench single_fp32 --shape 12,12,197 --wire fp32 --concurrency 1 --duration "$d" --warmup "$w"
# The same from the float32 arrays, the client fusing the heads (mean, one
# thread) and encoding inside each timed call, as a model server calling
# Client::Explain with its default options.
run_bench single_fp32_arrays --shape 12,12,197 --wire fp32 --concurrency 1 --rpc arrays \
  --client-fusion auto --duration "$d" --warmup "$w"
# The CLI end to end (a process per pass: map the .npy, send, write the map)
# against the RPC time it reports itself.
step "attnroll explain end to end"
before="$(loadavg)"
"$PYTHON" - "$BUILD_DIR/attnroll" "$addr" "$tmp" "$quick" > "$tmp/cli.json" <<'EOF_PY'
import json, statistics, subprocess, sys, time
import numpy as np
cli, addr, tmp, quick = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
rng = np.random.default_rng(0)
x = rng.standard_normal((12, 12, 197, 197), dtype=np.float32)
x = np.exp(x - x.max(-1, keepdims=True))
np.save(tmp + "/att.npy", (x / x.sum(-1, keepdims=True)).astype(np.float32))
walls, rpcs = [], []
for i in range(2 if quick else 11):
    t = time.perf_counter()
    out = subprocess.run([cli, "--server", addr, "explain", "--attention", tmp + "/att.npy",
                          "--out", tmp + "/map.npy", "--json"], check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t
    if i == 0:
        continue  # the first run warms the page cache and the server
    walls.append(wall * 1e3)
    rpcs.append(json.loads(out)["timing"]["client_seconds"] * 1e3)
print(json.dumps({"wall_ms": statistics.median(walls), "rpc_ms": statistics.median(rpcs),
                  "bytes": 12 * 12 * 197 * 197 * 4}))
EOF_PY
record cli "$before"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""

# 4. The report.
if ! "$PYTHON" tests/bench/report.py "$tmp" "$quick" > "$tmp/report.md"; then
  kept="$(mktemp -d)"
  cp -r "$tmp"/. "$kept"
  echo "run_benchmarks.sh: report.py failed; the raw results are kept in $kept" >&2
  exit 1
fi
cat "$tmp/report.md"
[ -n "$out" ] && cp "$tmp/report.md" "$out"
exit 0
