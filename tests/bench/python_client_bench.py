#!/usr/bin/python3
"""The Python client end to end against in-process rollouts, side by side in
one run, on the same ViT-B/16 CLS-row pass (L = 12, H = 12, n = 197; the
attention of torchvision's vit_b_16 with random weights, captured once and
kept in memory).

    PYTHONPATH=build/python /usr/bin/python3 tests/bench/python_client_bench.py \\
        --bin-dir build [--repeats 30] [--json]

Timed, each the median of --repeats runs after two warm-ups:
  numpy         tests/bench/numpy_rollout.py's rollout_row (float32, what a user writes)
  torch         the same ops in torch (float32, torch's threads)
  client ...    attnroll.Client.explain(attention, prefix_tokens=1, grid=(14, 14)) against
                an attnroll-server on 127.0.0.1 started by this script (--workers 2):
                fp32 every head (client_fusion="off"), fp16 every head, client-fused fp32,
                client-fused fp16; the arrays are in memory, the time includes encoding,
                fusing, the call and decoding the map.
Every client map is checked against numpy's (max abs difference printed).
A Markdown table on stdout (or one JSON object with --json); the ratio is
client / numpy. Timing only: nothing here asserts a speed.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
import numpy_rollout  # noqa: E402
import vit_saliency  # noqa: E402

import attnroll  # noqa: E402
from attnroll.capture import capture_attention  # noqa: E402


def torch_rollout_row(layers, row):
    n = layers[0].shape[-1]
    eye = torch.eye(n)
    R = None
    for A in layers:
        At = 0.5 * (A.mean(0) + eye)
        At = At / At.sum(-1, keepdim=True)
        R = At if R is None else At @ R
    return R[row].clone()


def median_ms(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def capture_vit():
    model = vit_saliency.build_model(None, 0)
    _, x = vit_saliency.preprocess(vit_saliency.synthetic_image())
    with torch.no_grad(), capture_attention(model) as cap:
        model(x)
    return np.ascontiguousarray(cap.attentions()[:, 0])  # [12, 12, 197, 197] float32


def start_server(bin_dir):
    srv = subprocess.Popen([os.path.join(bin_dir, "attnroll-server"), "--listen", "127.0.0.1:0",
                            "--metrics-listen", "none", "--workers", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = srv.stdout.readline().decode()
    if "grpc=" not in line:
        srv.kill()
        sys.exit("attnroll-server did not start: %r" % line)
    return srv, line.split("grpc=")[1].split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("ATTNROLL_BIN_DIR", "build"))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    att = capture_vit()
    layers = list(att)
    tlayers = [torch.from_numpy(a) for a in layers]
    want = numpy_rollout.rollout_row(layers, 0)[1:]
    rows = [("numpy in process", median_ms(lambda: numpy_rollout.rollout_row(layers, 0),
                                           args.repeats), None, None)]
    rows.append(("torch in process (%d threads)" % torch.get_num_threads(),
                 median_ms(lambda: torch_rollout_row(tlayers, 0), args.repeats), None, None))
    srv, addr = start_server(args.bin_dir)
    try:
        with attnroll.Client(addr, timeout=60) as c:
            for name, kw in (("client fp32, every head", dict(client_fusion="off")),
                             ("client fp16, every head", dict(client_fusion="off", wire="fp16")),
                             ("client fp32, fused on the client", dict(client_fusion="on")),
                             ("client fp16, fused on the client",
                              dict(client_fusion="on", wire="fp16"))):
                out = {}

                def call(kw=kw, out=out):
                    out["r"] = c.explain(att, prefix_tokens=1, grid=(14, 14), **kw)
                ms = median_ms(call, args.repeats)
                r = out["r"]
                err = float(np.abs(r.map.ravel() - want).max())
                rows.append((name, ms, r.sent_bytes, err))
            # Streamed as a capture does during the forward: layers 0..L-2 go out
            # first (the forward's time); timed is what is left once the forward
            # ends: sending the last layer and finish().
            for name, wire in (("client streamed fp32, after the last layer", "fp32"),
                               ("client streamed fp16, after the last layer", "fp16")):
                out = {}

                def streamed(wire=wire, out=out):
                    done = threading.Event()
                    p = c.stream_pass(len(layers), prefix_tokens=1, grid=(14, 14), wire=wire,
                                      on_sent=lambda l: l == len(layers) - 2 and done.set())
                    for a in layers[:-1]:
                        p.send(a)
                    done.wait(30)
                    t0 = time.perf_counter()
                    p.send(layers[-1])
                    out["r"] = p.finish()
                    out["ms"] = (time.perf_counter() - t0) * 1e3
                samples = []
                for i in range(args.repeats + 2):
                    streamed()
                    if i >= 2:
                        samples.append(out["ms"])
                r = out["r"]
                rows.append((name, float(np.median(samples)), r.sent_bytes,
                             float(np.abs(r.map.ravel() - want).max())))
    finally:
        srv.terminate()
        srv.wait(timeout=20)
    base = rows[0][1]
    if args.json:
        print(json.dumps({n: dict(median_ms=ms, ratio_to_numpy=ms / base, bytes_sent=b,
                                  max_abs_diff=e) for n, ms, b, e in rows}))
        return
    print("ViT-B/16 CLS row (L=12, H=12, n=197), median of %d, server on loopback, "
          "%d cores" % (args.repeats, os.cpu_count()))
    print()
    print("| path | median ms | / numpy | bytes sent | max abs diff vs numpy |")
    print("|---|---:|---:|---:|---:|")
    for n, ms, b, e in rows:
        print("| %s | %.2f | %.2f | %s | %s |" % (n, ms, ms / base, "" if b is None else b,
                                                  "" if e is None else "%.1e" % e))


if __name__ == "__main__":
    main()
