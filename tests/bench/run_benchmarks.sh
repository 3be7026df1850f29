#!/usr/bin/env bash
# Times attnroll against a straightforward numpy rollout and prints a Markdown
# table of medians. Builds nothing: build rollout_bench first, e.g.
#   cmake -S . -B build && make -C build rollout_bench
#
# Usage: tests/bench/run_benchmarks.sh [--with-causal] [--repetitions N] [--filter REGEX]
#   BUILD_DIR       build directory (default: build, relative to the repo root)
#   --with-causal   also time numpy on the causal 32x32x2048 shape. Off by
#                   default because it is slow: ~10 s with OpenBLAS here, about
#                   2 minutes with Debian's reference BLAS (libblas3 alone).
#   --repetitions N repetitions of each attnroll case (default 5; the causal
#                   cases fix their own: 1 iteration x 3 repetitions)
#   --filter REGEX  only the rollout_bench cases matching REGEX
#
# The attnroll causal case always runs (~1 minute today). attnroll runs on one
# core; numpy uses whatever BLAS the system has (install libopenblas0-pthread:
# see deploy/install-deps.sh) with the threads and kernel the environment gives
# it. OPENBLAS_NUM_THREADS / OPENBLAS_CORETYPE are printed, never changed.
# Debian 12's OpenBLAS 0.3.21 may not recognise a new CPU and fall back to its
# slow generic "Prescott" kernels; the report says so. Then e.g.
#   OPENBLAS_CORETYPE=SkylakeX tests/bench/run_benchmarks.sh
# gives numpy the AVX-512 kernels (on a CPU that has AVX-512).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
BENCH="$BUILD_DIR/tests/bench/rollout_bench"
PYTHON=/usr/bin/python3

with_causal=0
repetitions=5
filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --with-causal) with_causal=1 ;;
    --repetitions) repetitions="$2"; shift ;;
    --repetitions=*) repetitions="${1#*=}" ;;
    --filter) filter="$2"; shift ;;
    --filter=*) filter="${1#*=}" ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_benchmarks.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ ! -x "$BENCH" ]; then
  echo "run_benchmarks.sh: $BENCH not found; build it first:" >&2
  echo "  cmake -S . -B $BUILD_DIR && make -C $BUILD_DIR rollout_bench" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== attnroll: $BENCH (--benchmark_repetitions=$repetitions)" >&2
bench_args=(--benchmark_repetitions="$repetitions" --benchmark_display_aggregates_only=true
            --benchmark_out="$tmp/attnroll.json" --benchmark_out_format=json)
[ -n "$filter" ] && bench_args+=(--benchmark_filter="$filter")
# JSON goes to the file; the console report (aggregates only) is progress on stderr.
"$BENCH" "${bench_args[@]}" >&2

echo "== numpy: tests/bench/numpy_rollout.py" >&2
np_args=(--json)
if [ "$with_causal" -eq 0 ]; then
  np_args+=(--only vit_b16_cls bert_base_cls)
fi
"$PYTHON" tests/bench/numpy_rollout.py "${np_args[@]}" > "$tmp/numpy.json" 2> "$tmp/numpy.log" \
  || { cat "$tmp/numpy.log" >&2; exit 1; }
grep -v '^ ' "$tmp/numpy.log" | grep -E '^(numpy|.*: repeat)' >&2 || true
# Which OpenBLAS kernel numpy gets matters more than anything else on the numpy
# side: Debian 12's OpenBLAS 0.3.21 does not know every new CPU model and then
# falls back to its generic "Prescott" kernels (~5x slower sgemm). Report it;
# set OPENBLAS_CORETYPE (e.g. SkylakeX on an AVX-512 machine) to override.
"$PYTHON" - > "$tmp/openblas.txt" 2>/dev/null <<'EOF_PY' || true
import ctypes, os, numpy
libs = [l.split()[-1] for l in open("/proc/self/maps") if "libopenblas" in l]
if libs:
    lib = ctypes.CDLL(libs[0])
    lib.openblas_get_corename.restype = ctypes.c_char_p
    core = lib.openblas_get_corename().decode()
    note = " (generic fallback kernels: slow sgemm; see OPENBLAS_CORETYPE)" if core == "Prescott" else ""
    print("OpenBLAS core: %s, threads: %d, OPENBLAS_CORETYPE=%s%s" % (
        core, lib.openblas_get_num_threads(), os.environ.get("OPENBLAS_CORETYPE", "<unset>"), note))
EOF_PY

"$PYTHON" - "$tmp/attnroll.json" "$tmp/numpy.json" "$tmp/numpy.log" "$with_causal" "$tmp/openblas.txt" <<'EOF'
import json, sys

bench = json.load(open(sys.argv[1]))
numpy = json.load(open(sys.argv[2]))
blas = next((l.strip() for l in open(sys.argv[3]) if l.startswith("numpy ")), "numpy: ?")
with_causal = sys.argv[4] == "1"
openblas = open(sys.argv[5]).read().strip()

def to_ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * scale

# Per case: the median aggregate; with a single repetition, the one run.
runs = {}
for b in bench["benchmarks"]:
    name = b.get("run_name", b["name"])
    if b.get("error_occurred"):
        runs[name] = {"error": b.get("error_message", "error")}
        continue
    if b.get("run_type") == "aggregate":
        if b.get("aggregate_name") == "median":
            runs[name] = {"ms": to_ms(b), "gbs": b.get("GB/s"), "label": b.get("label", "")}
    elif name not in runs or "single" in runs[name]:
        runs.setdefault(name, {"ms": to_ms(b), "gbs": b.get("GB/s"),
                               "label": b.get("label", ""), "single": True})

def short(name):
    # "pass/vit_b16_cls/fp32/min_time:0.500/real_time" -> "pass/vit_b16_cls/fp32"
    keep = [p for p in name.split("/")
            if p != "real_time" and not p.startswith(("min_time:", "iterations:", "repeats:"))]
    return "/".join(keep)

def find(prefix):
    for name, r in runs.items():
        if short(name) == prefix:
            return r
    return None

# shape label, rollout_bench case, numpy shape
ROWS = [
    ("ViT-B/16 CLS row, 12x12x197, fp32 wire", "pass/vit_b16_cls/fp32", "vit_b16_cls"),
    ("ViT-B/16 CLS row, 12x12x197, fp16 wire", "pass/vit_b16_cls/fp16", "vit_b16_cls"),
    ("BERT-base CLS row, 12x12x512, fp32 wire", "pass/bert_base_cls/fp32", "bert_base_cls"),
    ("Causal last row, 32x32x2048, fp16 wire", "pass/causal_2048_last/fp16", "causal_2048_last"),
    ("ViT-B/16 CLS row per layer, fp32 wire", "pass/vit_b16_per_layer/fp32", "vit_b16_cls"),
    ("BERT-base mean of rows per layer, fp32 wire", "pass/bert_base_mean_per_layer/fp32",
     "bert_base_cls"),
    ("ViT-B/16 CLS row, math only (decoded fp32)", "math/vit_b16_cls/fp32", "vit_b16_cls"),
    ("Causal last row, math only (decoded fp32)", "math/causal_2048_last/fp32",
     "causal_2048_last"),
]

def fmt_ms(ms):
    return "%.0f" % ms if ms >= 100 else "%.2f" % ms

print()
print(blas)
if openblas:
    print(openblas)
print()
print("| shape | numpy median ms | attnroll median ms | speed-up |")
print("|---|---:|---:|---:|")
for label, case, npname in ROWS:
    r = find(case)
    if r is None:
        continue
    path = r.get("label")
    shape = "%s (%s)" % (label, path) if path else label
    np_ms = numpy.get(npname)
    if "error" in r:
        print("| %s | %s | error: %s | |" % (shape, fmt_ms(np_ms) if np_ms else "-", r["error"]))
        continue
    np_txt = fmt_ms(np_ms) if np_ms is not None else (
        "- (--with-causal)" if npname == "causal_2048_last" and not with_causal else "-")
    ratio = "%.2fx" % (np_ms / r["ms"]) if np_ms is not None else "-"
    print("| %s | %s | %s | %s |" % (shape, np_txt, fmt_ms(r["ms"]), ratio))
print()
print("speed-up = numpy median / attnroll median (> 1: attnroll is faster). attnroll 'pass'")
print("rows time PassSession on wire bytes (decode + validation + math, one core, no gRPC);")
print("numpy starts from fp32 arrays already in memory and validates nothing.")
print()
print("All rollout_bench cases (median wall time; GB/s = bytes read / time):")
print()
print("| case | path | median | GB/s |")
print("|---|---|---:|---:|")
for name, r in runs.items():
    if "error" in r:
        print("| %s | | error: %s | |" % (short(name), r["error"]))
        continue
    ms = r["ms"]
    t = fmt_ms(ms) + " ms" if ms >= 1 else "%.1f us" % (ms * 1e3)
    g = "%.2f" % r["gbs"] if r.get("gbs") is not None else ""
    print("| %s | %s | %s | %s |" % (short(name), r.get("label", ""), t, g))
EOF
