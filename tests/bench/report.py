#!/usr/bin/python3
"""Turns one run of tests/bench/run_benchmarks.sh into a Markdown report.

    /usr/bin/python3 tests/bench/report.py DIR QUICK

DIR holds rollout.json (Google Benchmark), peers.json (tests/bench/peers.py),
bench_*.json (`attnroll bench --json`), load.txt (name|load before|after)
and, when PREVIOUS_BENCH was given, previous.json (an earlier rollout_bench).
"""

import json
import os
import sys

SHAPES = {  # name: (L, H, n, causal)
    "vit_b16": (12, 12, 197, False),
    "bert_base": (12, 12, 512, False),
    "vit_l16": (24, 16, 577, False),
    "causal_2048": (32, 32, 2048, True),
}
LABELS = {"vit_b16": "ViT-B/16 12x12x197", "bert_base": "BERT-base 12x12x512",
          "vit_l16": "ViT-L/16 24x16x577", "causal_2048": "causal 32x32x2048"}
ELEM = {"fp32": 4, "fp16": 2, "bf16": 2}


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def ms_of(b):
    return b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]


def medians(bench):
    """name -> the median run (or the single run without repetitions)."""
    out = {}
    for b in bench.get("benchmarks", []):
        name = b.get("run_name", b["name"])
        if b.get("error_occurred"):
            out[name] = {"error": b.get("error_message", "error")}
        elif b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                out[name] = b
        elif name not in out:
            out[name] = b
    return {short(k): v for k, v in out.items()}


def short(name):
    keep = [p for p in name.split("/")
            if p != "real_time" and not p.startswith(("min_time:", "iterations:", "repeats:"))]
    return "/".join(keep)


def fmt(ms):
    if ms is None:
        return "-"
    return "%.0f" % ms if ms >= 100 else ("%.1f" % ms if ms >= 10 else "%.2f" % ms)


def main():
    d, quick = sys.argv[1], sys.argv[2] == "1"
    runs = medians(load(os.path.join(d, "rollout.json"), {}))
    ctx = load(os.path.join(d, "rollout.json"), {}).get("context", {})
    peers = load(os.path.join(d, "peers.json"), {})
    previous = medians(load(os.path.join(d, "previous.json"), {}))

    def prev_ms(name):
        r = previous.get(name)
        return None if r is None or "error" in r else ms_of(r)

    def prev_cols(name, ms):
        pm = prev_ms(name)
        return (fmt(pm), "%.2fx" % (pm / ms) if pm and ms else "-")
    loads = {}
    if os.path.exists(os.path.join(d, "load.txt")):
        for line in open(os.path.join(d, "load.txt")):
            name, before, after = line.strip().split("|")
            loads[name] = (before, after)

    def run_ms(name):
        r = runs.get(name)
        return None if r is None or "error" in r else ms_of(r)

    def counter(name, key):
        r = runs.get(name)
        return None if r is None or "error" in r else r.get(key)

    bw = counter("probe/read_bandwidth", "GB/s")
    bw_4k = counter("probe/read_bandwidth_4k_pages", "GB/s")
    copy = counter("probe/memcpy", "GB/s")
    p = print
    if quick:
        p("**Smoke run (--quick): tiny cases, one repetition; these numbers mean nothing.**\n")
    p("Machine: %s, %s CPUs at %s MHz; load average around each step in the last table." % (
        ctx.get("host_name", "?"), ctx.get("num_cpus", "?"), ctx.get("mhz_per_cpu", "?")))
    p("")
    p("### Bounds (measured in this run, one core)\n")
    p("| probe | value |")
    p("|---|---:|")
    if bw:
        p("| read bandwidth (sum of a 1 GiB buffer) | %.1f GB/s |" % bw)
    if bw_4k:
        p("| the same on 4 KiB pages (where wire bytes are) | %.1f GB/s |" % bw_4k)
    if copy:
        p("| memcpy (256 MiB) | %.1f GB/s |" % copy)
    peak = {}
    for m in (512, 577, 1024):
        for lib in ("openblas", "eigen"):
            g = counter("probe/sgemm_%s/%d" % (lib, m), "GFLOP/s")
            if g:
                peak[(lib, m)] = g / 1e9 if g > 1e6 else g
                p("| sgemm %s %d x %d | %.1f GFLOP/s |" % ("OpenBLAS" if lib == "openblas" else "Eigen",
                                                          m, m, peak[(lib, m)]))
    label = (runs.get("probe/sgemm_openblas/512") or {}).get("label")
    if label:
        p("\nOpenBLAS: %s." % label)

    p("\n### Row read-outs (CLS / last row), one thread, from wire bytes\n")
    prev_note = ""
    if previous:
        prev_note = (" previous = the same case of the earlier build given as PREVIOUS_BENCH (%s), "
                     "run right after in the same session." % os.environ.get("PREVIOUS_LABEL", "unnamed"))
    p("bound = the pass's attention bytes at fp32 width / read bandwidth; % = bound / time. "
      "Peers start from fp32 arrays in memory and validate nothing." + prev_note + "\n")
    p("| shape | wire | bound (fp32) ms | attnroll ms | % of fp32 bound | faults/pass | "
      "numpy row | torch row | best peer / attnroll | previous ms | previous / attnroll | path |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    speedups = []
    for shape, (L, H, n, causal) in SHAPES.items():
        case = "causal_2048_last" if causal else shape + "_cls"
        for wire in ("fp32", "fp16", "bf16", "fp32/2_threads", "fp16/2_threads"):
            ms = run_ms("pass/%s/%s" % (case, wire))
            if ms is None:
                continue
            bound = L * H * n * n * 4 / (bw * 1e9) * 1e3 if bw else None
            nr, tr = peers.get("numpy_row/" + shape), peers.get("torch_row/" + shape)
            best = min([x for x in (nr, tr) if x is not None], default=None)
            p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % ((
                LABELS[shape], wire.replace("/2_threads", ", 2 threads"), fmt(bound), fmt(ms),
                "%.0f%%" % (100 * bound / ms) if bound else "-",
                "%.0f" % counter("pass/%s/%s" % (case, wire), "faults_per_pass"),
                fmt(nr), fmt(tr), "%.2fx" % (best / ms) if best else "-")
                + prev_cols("pass/%s/%s" % (case, wire), ms)
                + (runs["pass/%s/%s" % (case, wire)].get("label", ""),)))
        f32, f16 = run_ms("pass/%s/fp32" % case), run_ms("pass/%s/fp16" % case)
        if f32 and f16:
            speedups.append("%s %.2fx" % (LABELS[shape], f32 / f16))
    if speedups:
        p("\nfp16 wire against fp32 (time fp32 / time fp16): " + ", ".join(speedups) + ".")

    p("\n### Full matrices (per-layer read-outs: the chain path), one thread\n")
    p("flops = (L - 1) 2 n^3 of the products; % = achieved / OpenBLAS sgemm at the nearest "
      "probed size.\n")
    p("| case | attnroll ms | GFLOP/s | % of sgemm peak | numpy full | torch full | previous ms | "
      "previous / attnroll |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in ("vit_b16", "bert_base", "vit_l16"):
        L, H, n, _ = SHAPES[shape]
        for case in ("%s_per_layer/fp32" % shape, "%s_per_layer/fp16" % shape,
                     "%s_mean_per_layer/fp32" % shape):
            ms = run_ms("pass/" + case)
            if ms is None:
                continue
            flops = (L - 1) * 2.0 * n ** 3
            gf = flops / (ms * 1e-3) / 1e9
            m = min((512, 577, 1024), key=lambda s: abs(s - n))
            pk = peak.get(("openblas", m))
            p("| %s | %s | %.1f | %s | %s | %s | %s | %s |" % ((
                case, fmt(ms), gf, "%.0f%%" % (100 * gf / pk) if pk else "-",
                fmt(peers.get("numpy_full/" + shape)), fmt(peers.get("torch_full/" + shape)))
                + prev_cols("pass/" + case, ms)))

    p("\n### Through the service (`attnroll bench`, ViT-B/16 12x12x197, 127.0.0.1)\n")
    p("| run | passes/s | MB/s | p50 ms | p99 ms | rollout / null |")
    p("|---|---:|---:|---:|---:|---:|")
    for c in (2, 8):
        r = load(os.path.join(d, "bench_rollout_c%d.json" % c))
        nl = load(os.path.join(d, "bench_null_c%d.json" % c))
        for name, j in (("rollout fp16, concurrency %d" % c, r), ("null fp16, concurrency %d" % c, nl)):
            if not j:
                continue
            lat = j.get("latency_ms") or {}
            ratio = ""
            if j is r and nl and nl.get("passes_per_second"):
                ratio = "%.0f%%" % (100 * r["passes_per_second"] / nl["passes_per_second"])
            p("| %s | %.1f | %.0f | %s | %s | %s |" % (name, j["passes_per_second"], j["mb_per_second"],
                                                       fmt(lat.get("p50")), fmt(lat.get("p99")), ratio))
    s = load(os.path.join(d, "bench_single_fp32.json"))
    if s:
        lat = s.get("latency_ms") or {}
        cost = s["bytes_per_pass"] / (copy * 1e9) * 1e3 if copy else None
        p("| one fp32 pass at a time (C++ client) | %.1f | %.0f | %s | %s | p50 = %s x the copy cost "
          "of its %.1f MB (%s ms) |" % (s["passes_per_second"], s["mb_per_second"], fmt(lat.get("p50")),
                                        fmt(lat.get("p99")),
                                        "%.1f" % (lat["p50"] / cost) if cost and lat.get("p50") else "-",
                                        s["bytes_per_pass"] / 1e6, fmt(cost)))
    a = load(os.path.join(d, "bench_single_fp32_arrays.json"))
    if a:
        lat = a.get("latency_ms") or {}
        b, l, h, n = a["shape"]
        array_bytes = b * l * h * n * n * 4
        cost = array_bytes / (copy * 1e9) * 1e3 if copy else None
        p("| one fp32 pass at a time from arrays in memory, %s (C++ client, %.2f MB sent) "
          "| %.1f | %.0f | %s | %s | p50 = %s x the copy cost of the arrays' %.1f MB (%s ms) |" % (
              "heads fused in the call" if a["heads_fused_on_client"] else "every head",
              a["bytes_per_pass"] / 1e6, a["passes_per_second"], a["mb_per_second"],
              fmt(lat.get("p50")), fmt(lat.get("p99")),
              "%.1f" % (lat["p50"] / cost) if cost and lat.get("p50") else "-", array_bytes / 1e6,
              fmt(cost)))

    cli = load(os.path.join(d, "cli.json"))
    if cli:
        p("| `attnroll explain` end to end, %.1f MB fp32 .npy (process start to exit) | | | %s | | "
          "%.2f x its own RPC time (%s ms) |" % (cli["bytes"] / 1e6, fmt(cli["wall_ms"]),
                                                cli["wall_ms"] / cli["rpc_ms"], fmt(cli["rpc_ms"])))

    p("\n### Load average (1, 5, 15 min) before and after each step\n")
    p("| step | before | after |")
    p("|---|---|---|")
    for name, (before, after) in loads.items():
        p("| %s | %s | %s |" % (name, before, after))


if __name__ == "__main__":
    main()
