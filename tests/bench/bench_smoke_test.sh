#!/usr/bin/env bash
# ctest bench_smoke: tests/bench/run_benchmarks.sh --quick runs every step and
# writes every table of the report (its numbers are not checked: speed lives
# in benchmarks, never in tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$ROOT/tests/bench/run_benchmarks.sh" --quick --out "$out" > /dev/null
for section in "### Bounds" "| read bandwidth" "| sgemm OpenBLAS 512 x 512" "### Row read-outs" \
               "| ViT-B/16 12x12x197 | fp32 |" "### Full matrices" \
               "| vit_b16_per_layer/fp32 |" "### Through the service" "| rollout fp16, concurrency 2 |" \
               "| null fp16, concurrency 8 |" "| one fp32 pass at a time" \
               "| one fp32 pass at a time from arrays in memory" '| `attnroll explain` end to end' "### Load average"; do
  if ! grep -qF -- "$section" "$out"; then
    echo "bench_smoke: the report has no '$section':" >&2
    cat "$out" >&2
    exit 1
  fi
done
echo "bench_smoke: every table present"
