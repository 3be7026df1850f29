#!/usr/bin/python3
"""Baseline: a straightforward numpy attention rollout, to compare attnroll with.

    /usr/bin/python3 tests/bench/numpy_rollout.py [--repeats N] [--json] [--only NAME ...]

With --json, stdout is exactly one JSON object {name: median_ms}; everything
else goes to stderr.

What is timed (float32 throughout, as a typical user script would do it):
    for each layer l:  F = A[l].mean(axis=0)            # fuse heads
                       At = 0.5 * (F + I)                # residual, a = 0.5
                       At /= At.sum(-1, keepdims=True)   # renormalise rows
                       R = At @ R                        # R_first = At_first
    read out row 0 (ViT / BERT: the CLS row) or the last row (causal decoder).
Data generation is not timed.  Each shape reports the median of N repeats in
ms (N = 5 by default; 1 for the causal shape unless --repeats is given).

Shapes:
    vit_b16_cls       L=12, H=12, n=197,  row 0
    bert_base_cls     L=12, H=12, n=512,  row 0
    causal_2048_last  L=32, H=32, n=2048, lower-triangular attention, last row

Memory note for the causal shape: 32 layers of [32, 2048, 2048] float32 would
be 17 GB.  We generate ONE layer [H, n, n] (512 MiB) and feed the same array
as every one of the L layers.  The arithmetic is identical (each layer is
still read in full, fused, renormalised and multiplied into the full n x n
chain); only the cache behaviour differs trivially, since 512 MiB does not fit
in any cache anyway.  The small shapes generate all layers.

The environment may set OPENBLAS_CORETYPE (and thread counts); this script
does not change them, it only prints what it sees.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

SHAPES = [
    # name, L, H, n, causal
    ("vit_b16_cls", 12, 12, 197, False),
    ("bert_base_cls", 12, 12, 512, False),
    ("causal_2048_last", 32, 32, 2048, True),
]


def blas_summary():
    """One line: which BLAS library the running numpy has loaded."""
    libs = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path).lower()
                if any(k in base for k in ("blas", "mkl", "blis", "atlas")):
                    real = os.path.realpath(path)
                    if real not in libs:
                        libs.append(real)
    except OSError:
        pass
    kind = "unknown"
    joined = " ".join(libs).lower()
    if "openblas" in joined:
        kind = "OpenBLAS"
    elif "mkl" in joined:
        kind = "MKL"
    elif "blis" in joined:
        kind = "BLIS"
    elif "atlas" in joined:
        kind = "ATLAS"
    elif "/blas/libblas" in joined:
        kind = "reference (netlib) BLAS -- unoptimised, sgemm is very slow"
    env = " ".join("%s=%s" % (k, os.environ[k]) for k in
                   ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS") if k in os.environ)
    return "numpy %s, BLAS: %s [%s]%s" % (
        np.__version__, kind, ", ".join(libs) or "no BLAS library mapped",
        (" env: " + env) if env else "")


def make_layer(rng, H, n, causal):
    """One layer [H, n, n] float32 of row-stochastic, peaked attention."""
    A = np.empty((H, n, n), dtype=np.float32)
    if causal:
        upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    for h in range(H):
        x = rng.standard_normal((n, n), dtype=np.float32)
        x *= np.float32(rng.uniform(1.0, 6.0))
        if causal:
            x[upper] = -np.inf
        x -= x.max(axis=-1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=-1, keepdims=True)
        A[h] = x
    return A


def rollout_row(layers, row):
    """layers: a sequence of [H, n, n] float32 arrays; returns row `row` of R."""
    n = layers[0].shape[-1]
    eye = np.eye(n, dtype=np.float32)
    R = None
    for A in layers:
        F = A.mean(axis=0)
        At = 0.5 * (F + eye)
        At /= At.sum(axis=-1, keepdims=True)
        R = At if R is None else At @ R
    return R[row].copy()


def bench(name, L, H, n, causal, repeats, rng, log):
    t0 = time.perf_counter()
    if causal:
        one = make_layer(rng, H, n, causal=True)
        layers = [one] * L  # same array for all layers, see the module doc
    else:
        layers = [make_layer(rng, H, n, causal=False) for _ in range(L)]
    log("%s: generated L=%d H=%d n=%d in %.1f s (%d distinct layer arrays)"
        % (name, L, H, n, time.perf_counter() - t0, len({id(a) for a in layers})))
    row = n - 1 if causal else 0
    times = []
    out = None
    for r in range(repeats):
        t = time.perf_counter()
        out = rollout_row(layers, row)
        times.append((time.perf_counter() - t) * 1e3)
        log("%s: repeat %d/%d %.2f ms" % (name, r + 1, repeats, times[-1]))
    # Sanity: a rollout row is a probability vector.
    s = float(out.sum(dtype=np.float64))
    if not (abs(s - 1.0) < 1e-3 and (out >= 0).all()):
        raise SystemExit("%s: read-out row is not stochastic (sum %r)" % (name, s))
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None,
                    help="repeats per shape (default 5; 1 for the causal shape)")
    ap.add_argument("--json", action="store_true",
                    help="print {name: median_ms} as one JSON object on stdout "
                         "(the BLAS line and the table then go to stderr)")
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in SHAPES],
                    help="run only these shapes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")

    # Progress always goes to stderr; with --json the table does too, so that
    # stdout is exactly one JSON object.
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    report = sys.stderr if args.json else sys.stdout
    print(blas_summary(), file=report, flush=True)
    rng = np.random.default_rng(args.seed)
    results = {}
    rows = []
    for name, L, H, n, causal in SHAPES:
        if args.only and name not in args.only:
            continue
        repeats = args.repeats if args.repeats is not None else (1 if causal else 5)
        med, times = bench(name, L, H, n, causal, repeats, rng, log)
        results[name] = med
        rows.append((name, "%dx%dx%d" % (L, H, n), repeats, med, min(times), max(times)))

    print("%-18s %-12s %7s %12s %12s %12s" % ("shape", "LxHxn", "repeats", "median ms",
                                             "min ms", "max ms"), file=report)
    for name, shape, reps, med, lo, hi in rows:
        print("%-18s %-12s %7d %12.2f %12.2f %12.2f" % (name, shape, reps, med, lo, hi),
              file=report)
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
