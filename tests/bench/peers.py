#!/usr/bin/python3
"""In-process peers of attnroll: what a user would write instead of calling it.

    /usr/bin/python3 tests/bench/peers.py [--repeats N] [--only NAME ...] [--threads T]

Prints one JSON object on stdout, {"<peer>/<shape>": median_ms, ...}, and
progress on stderr. Peers (float32 throughout, mean over heads, residual 0.5,
rows renormalised, the shapes and read-out rows of tests/bench/rollout_bench):

    numpy_full   for each layer: At = rownorm(0.5 (A.mean(0) + I)); R = At @ R;
                 read row r of R (the full chain: n x n products)
    numpy_row    every At kept, then only the wanted row: v = At_last[r],
                 v = v @ At_l down to the first layer (of the last layer only
                 row r is fused)
    torch_full   the same two in torch (torch.from_numpy: the same bytes)
    torch_row

Shapes: vit_b16 (12x12x197, row 0), bert_base (12x12x512, row 0), vit_l16
(24x16x577, row 0), causal_2048 (32x32x2048, lower-triangular, last row; one
generated layer [H, n, n] is used as every layer: 32 distinct layers would be
17 GB, and each layer is still read in full). The repeats of the peers are
interleaved (peer after peer in each repeat), and the median is reported.

Threads: --threads (default 1) is set for numpy's OpenBLAS
(OPENBLAS_NUM_THREADS, before numpy loads) and torch (torch.set_num_threads).
"""

import argparse
import json
import os
import statistics
import sys
import time

SHAPES = [
    # name, L, H, n, causal, row
    ("vit_b16", 12, 12, 197, False, 0),
    ("bert_base", 12, 12, 512, False, 0),
    ("vit_l16", 24, 16, 577, False, 0),
    ("causal_2048", 32, 32, 2048, True, 2047),
]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in SHAPES])
    ap.add_argument("--peers", nargs="+",
                    default=["numpy_full", "numpy_row", "torch_full", "torch_row"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


# Run as a script: the options (and the thread variables, which must be set
# before numpy loads). Imported (tests/bench/python_client_bench.py): the
# importer sets them itself and uses the peer functions.
ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread variables)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_layer(rng, H, n, causal):
    """One layer [H, n, n] float32: rows softmax(s * z), z ~ N(0, 1), s ~ U(1, 6)."""
    A = np.empty((H, n, n), dtype=np.float32)
    upper = np.triu(np.ones((n, n), dtype=bool), k=1) if causal else None
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


def numpy_full(layers, row):
    n = layers[0].shape[-1]
    eye = np.eye(n, dtype=np.float32)
    R = None
    for A in layers:
        At = 0.5 * (A.mean(axis=0) + eye)
        At /= At.sum(axis=-1, keepdims=True)
        R = At if R is None else At @ R
    return R[row].copy()


def numpy_row(layers, row):
    n = layers[0].shape[-1]
    eye = np.eye(n, dtype=np.float32)
    kept = []
    for A in layers[:-1]:
        At = 0.5 * (A.mean(axis=0) + eye)
        At /= At.sum(axis=-1, keepdims=True)
        kept.append(At)
    v = 0.5 * layers[-1][:, row, :].mean(axis=0)
    v[row] += np.float32(0.5)
    v /= v.sum()
    for At in reversed(kept):
        v = v @ At
    return v


def torch_peers(threads):
    """(torch, full, row_only) with torch on `threads` threads."""
    import torch
    torch.set_num_threads(threads)

    def full(layers, row):
        n = layers[0].shape[-1]
        eye = torch.eye(n, dtype=torch.float32)
        R = None
        for A in layers:
            At = 0.5 * (A.mean(dim=0) + eye)
            At /= At.sum(dim=-1, keepdim=True)
            R = At if R is None else At @ R
        return R[row].clone()

    def row_only(layers, row):
        n = layers[0].shape[-1]
        eye = torch.eye(n, dtype=torch.float32)
        kept = []
        for A in layers[:-1]:
            At = 0.5 * (A.mean(dim=0) + eye)
            At /= At.sum(dim=-1, keepdim=True)
            kept.append(At)
        v = 0.5 * layers[-1][:, row, :].mean(dim=0)
        v[row] += 0.5
        v /= v.sum()
        for At in reversed(kept):
            v = v @ At
        return v

    return torch, full, row_only


def main():
    rng = np.random.default_rng(ARGS.seed)
    torch = tfull = trow = None
    if any(p.startswith("torch") for p in ARGS.peers):
        torch, tfull, trow = torch_peers(ARGS.threads)
        log("torch %s, %d thread(s)" % (torch.__version__, torch.get_num_threads()))
    log("numpy %s, OPENBLAS_NUM_THREADS=%s" % (np.__version__, os.environ["OPENBLAS_NUM_THREADS"]))
    results = {}
    for name, L, H, n, causal, row in SHAPES:
        if ARGS.only and name not in ARGS.only:
            continue
        t0 = time.perf_counter()
        if causal:
            one = make_layer(rng, H, n, True)
            layers = [one] * L
        else:
            layers = [make_layer(rng, H, n, False) for _ in range(L)]
        tlayers = [torch.from_numpy(a) for a in layers] if torch is not None else None
        log("%s: generated L=%d H=%d n=%d in %.1f s" % (name, L, H, n, time.perf_counter() - t0))
        fns = {"numpy_full": lambda: numpy_full(layers, row),
               "numpy_row": lambda: numpy_row(layers, row),
               "torch_full": lambda: tfull(tlayers, row),
               "torch_row": lambda: trow(tlayers, row)}
        times = {p: [] for p in ARGS.peers}
        outs = {}
        repeats = ARGS.repeats if not causal else max(1, min(ARGS.repeats, 3))
        for r in range(repeats):
            for p in ARGS.peers:
                t = time.perf_counter()
                outs[p] = fns[p]()
                times[p].append((time.perf_counter() - t) * 1e3)
        ref = np.asarray(outs[ARGS.peers[0]], dtype=np.float64)
        for p in ARGS.peers:
            got = np.asarray(outs[p], dtype=np.float64)
            # Every peer computes the same row (a probability vector).
            if not (abs(got.sum() - 1.0) < 1e-3 and np.allclose(got, ref, atol=1e-5)):
                raise SystemExit("%s/%s: read-out row differs (sum %r)" % (p, name, got.sum()))
            results["%s/%s" % (p, name)] = round(statistics.median(times[p]), 3)
            log("%s/%s: median %.2f ms of %d" % (p, name, results["%s/%s" % (p, name)], repeats))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
