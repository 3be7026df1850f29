#!/usr/bin/python3
"""Times networkx (the reference implementation's library) on the attention
flow of the same graph flow_bench times attnroll on, checks the values agree,
extrapolates networkx to the whole CLS row and prints the ratio.

Abnar & Zuidema's code builds the graph with `get_adjmat` (edges from layer l
token i to layer l-1 token j, capacity At_l[i, j]) and runs one
nx.maximum_flow_value per (output, input) pair (`compute_flows`); this script
does exactly that for a few inputs of output token 0 (CLS), on the layers
`flow_bench --dump_dir` writes (float32 [L, m, m]: same seed, same recipe).

Usage: tests/bench/networkx_flow.py [--bench build/tests/bench/flow_bench]
           [--case vit_b16_structured] [--sources 3]
           [--flow-func preflow_push|edmonds_karp|shortest_augmenting_path]
networkx's default flow_func is preflow_push; the reference code passes
edmonds_karp (far slower: give it --sources 1 and patience).
Needs /usr/bin/python3 with python3-numpy and python3-networkx.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import networkx as nx
import numpy as np
from networkx.algorithms import flow as nxflow

# --case -> (shape, recipe) of flow_bench's dump file and CLS-row benchmark.
CASES = {
    "vit_b16_structured": ("vit_b16", "structured"),
    "vit_b16_selfstack": ("vit_b16", "selfstack"),
    "vit_b16_iid": ("vit_b16", "iid"),
    "bert_base_structured": ("bert_base", "structured"),
}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_graph(layers):
    """The reference get_adjmat graph as an nx.DiGraph (zero entries: no edge)."""
    num_layers, m, _ = layers.shape
    g = nx.DiGraph()
    g.add_nodes_from(range((num_layers + 1) * m))
    for l in range(1, num_layers + 1):
        a = layers[l - 1].astype(np.float64)
        ii, jj = np.nonzero(a)
        g.add_edges_from(
            (l * m + int(i), (l - 1) * m + int(j), {"capacity": float(a[i, j])})
            for i, j in zip(ii, jj))
    return g


def attnroll_row_seconds(bench, case):
    """Median real time of flow_bench's CLS-row case, in seconds."""
    shape, recipe = CASES[case]
    name = "flow/%s/%s/cls" % (shape, recipe)
    out = subprocess.run(
        [bench, "--benchmark_filter=^%s/" % name, "--benchmark_repetitions=3",
         "--benchmark_format=json"],
        check=True, capture_output=True, text=True).stdout
    runs = [b for b in json.loads(out)["benchmarks"]
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"]
    if not runs:
        raise SystemExit("flow_bench reported no median for %s" % name)
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[runs[0]["time_unit"]]
    return runs[0]["real_time"] * scale


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/tests/bench/flow_bench"))
    ap.add_argument("--case", default="vit_b16_structured", choices=sorted(CASES))
    ap.add_argument("--sources", type=int, default=3, help="input tokens networkx is timed on")
    ap.add_argument("--flow-func", default="preflow_push",
                    choices=["preflow_push", "edmonds_karp", "shortest_augmenting_path"])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not os.access(args.bench, os.X_OK):
        raise SystemExit("%s not found: build it first (cmake --build build --target flow_bench)" % args.bench)

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.bench, "--dump_dir=" + tmp], check=True, capture_output=True)
        layers = np.load(os.path.join(tmp, args.case + ".npy"))
        ours = np.load(os.path.join(tmp, args.case + "_cls.npy"))
    num_layers, m, _ = layers.shape

    t0 = time.perf_counter()
    g = build_graph(layers)
    build_s = time.perf_counter() - t0
    log = sys.stderr
    print("networkx %s: graph %d nodes, %d edges built in %.1f s" % (
        nx.__version__, g.number_of_nodes(), g.number_of_edges(), build_s), file=log)

    func = getattr(nxflow, args.flow_func)
    sink_node = num_layers * m + 0  # output token 0 (CLS); inputs are layer-0 nodes
    sources = sorted({int(round(k * (m - 1) / max(1, args.sources - 1)))
                      for k in range(args.sources)}) if args.sources > 1 else [m // 2]
    per_source = []
    worst = 0.0
    for j in sources:
        t0 = time.perf_counter()
        value = nx.maximum_flow_value(g, sink_node, j, flow_func=func)
        dt = time.perf_counter() - t0
        per_source.append(dt)
        rel = abs(value - ours[j]) / max(abs(value), 1e-300)
        worst = max(worst, rel)
        print("  input %3d: networkx %.12f in %.2f s; attnroll %.12f (rel diff %.1e)" % (
            j, value, dt, ours[j], rel), file=log)
    nx_source = sum(per_source) / len(per_source)
    nx_row = nx_source * m

    ours_row = attnroll_row_seconds(args.bench, args.case)
    result = {
        "case": args.case, "layers": num_layers, "tokens": m, "flow_func": args.flow_func,
        "networkx_version": nx.__version__, "graph_build_s": build_s,
        "sources_timed": sources, "networkx_s_per_source": nx_source,
        "networkx_cls_row_s_extrapolated": nx_row,
        "attnroll_cls_row_s": ours_row, "attnroll_s_per_source": ours_row / m,
        "speedup": nx_row / ours_row, "max_rel_diff": worst,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print("%s (L=%d, m=%d), CLS row, one core:" % (args.case, num_layers, m))
        print("  networkx %s: %.2f s per source (%d timed) -> %.0f s per row (x %d sources)" % (
            args.flow_func, nx_source, len(sources), nx_row, m))
        print("  attnroll:  %.2f ms per row (%.3f ms per source), median of 3" % (
            ours_row * 1e3, ours_row / m * 1e3))
        print("  speed-up: %.0fx; values agree to %.1e relative" % (nx_row / ours_row, worst))
    if worst > 1e-6:
        print("networkx_flow.py: values differ by %.1e relative (> 1e-6)" % worst, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
