#!/usr/bin/python3
"""Reference attention flow with networkx, built the way Abnar & Zuidema do.

Used by tests/analysis/attention_flow_test.cc. Reads layers from a text file:
    L m
    then L*m*m numbers: At_1 .. At_L, each m x m row-major (row = query)
and prints the m x m matrix flow[i][j] (max flow from input token j to output
token i), one row per line, 17 significant digits.

The graph is the reference `get_adjmat`: node l*m + k for layer l = 0..L, an
edge from (l, i) to (l-1, j) with capacity At_l[i, j], and the flow of output
token i from input token j is nx.maximum_flow_value(G, (L, i), (0, j)), as in
their `compute_flows` (which also fills entry [output, input]). Reversing the
edges of the design's graph keeps every max-flow value.

Usage: networkx_flow_reference.py LAYERS_FILE [--flow-func preflow_push|edmonds_karp]
"""
import argparse
import sys

import networkx as nx
from networkx.algorithms import flow as nxflow


def read_layers(path):
    with open(path) as f:
        tokens = f.read().split()
    num_layers, m = int(tokens[0]), int(tokens[1])
    values = [float(t) for t in tokens[2:]]
    if len(values) != num_layers * m * m:
        raise SystemExit("expected %d values, got %d" % (num_layers * m * m, len(values)))
    layers = []
    for l in range(num_layers):
        base = l * m * m
        layers.append([values[base + i * m: base + (i + 1) * m] for i in range(m)])
    return layers, m


def build_graph(layers, m):
    g = nx.DiGraph()
    g.add_nodes_from(range((len(layers) + 1) * m))
    for l in range(1, len(layers) + 1):
        a = layers[l - 1]
        for i in range(m):
            for j in range(m):
                if a[i][j] > 0:
                    g.add_edge(l * m + i, (l - 1) * m + j, capacity=a[i][j])
    return g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layers")
    ap.add_argument("--flow-func", default="preflow_push",
                    choices=["preflow_push", "edmonds_karp"])
    args = ap.parse_args()
    layers, m = read_layers(args.layers)
    num_layers = len(layers)
    g = build_graph(layers, m)
    func = getattr(nxflow, args.flow_func)
    out = sys.stdout
    for i in range(m):
        row = []
        for j in range(m):
            row.append(nx.maximum_flow_value(g, num_layers * m + i, j, flow_func=func))
        out.write(" ".join("%.17g" % v for v in row) + "\n")


if __name__ == "__main__":
    main()
