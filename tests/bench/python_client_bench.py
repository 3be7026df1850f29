#!/usr/bin/python3
"""The Python client end to end against in-process rollouts, side by side in
one run, on the same ViT-B/16 CLS-row pass (L = 12, H = 12, n = 197; the
attention of torchvision's vit_b_16 with random weights, captured once and
kept in memory).

    PYTHONPATH=build/python /usr/bin/python3 tests/bench/python_client_bench.py \\
        --bin-dir build [--repeats 30] [--ablation] [--json]

Timed, each the median of --repeats runs after two warm-ups, the paths
interleaved (one run of each path per round, so load on the machine hits
them alike); numpy and torch on one thread:
  numpy         what a user writes (tests/bench/peers.py's numpy_full: heads
                averaged, residual 0.5, rows renormalised, R = At R, row 0)
  numpy row     peers.py's numpy_row (only the CLS row pushed through)
  torch         peers.py's torch full chain (numpy_full's ops in torch)
  client ...    attnroll.Client.explain(attention, prefix_tokens=1, grid=(14, 14)) against
                an attnroll-server on 127.0.0.1 started by this script (--workers 2),
                with the channel already open and warm (one Client for the whole run,
                as a user's steady-state calls): fp32 every head (client_fusion="off"),
                fp16 every head, client-fused fp32, client-fused fp16 (a fused pass
                this size goes whole: one message, a unary call). The arrays are
                in memory; the time includes checking, fusing, encoding, the call and
                decoding the map.
  streamed      stream_pass as capture_attention does during a forward: layers
                0..L-2 sent first (the forward's time); timed is what is left once
                the forward ends: sending the last layer and finish().
  grpcio alone  the floor under the client-fused path: the same Explain call with
                the header and the 12 fused layer messages serialized beforehand
                (bytes in, bytes out: no numpy, no protobuf), on the same channel
                options, streamed (13 messages) and whole (one whole_pass message,
                a unary call: what the client sends); and one header + one
                12-token layer (a round trip carrying almost nothing).
  ablation      (--ablation) the client-fused whole pass built the earlier way, with
                protobuf objects on the calling thread, and written directly into its
                bytes but fused on one thread only (the client: directly, on two).
Every client map is checked against numpy's (max abs difference printed);
"server ms" is the response's timing (header to response, and the workers'
compute). A Markdown table on stdout (or one JSON object with --json); the
ratio is path / numpy. Timing only: nothing here asserts a speed.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one thread

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
import vit_saliency  # noqa: E402
sys.path.insert(0, HERE)
from peers import numpy_full, numpy_row, torch_peers  # noqa: E402  (the same peers as run_benchmarks.sh)

import attnroll  # noqa: E402
from attnroll import client as client_module, options, pipeline, tensors, whole_pass  # noqa: E402
from attnroll.capture import capture_attention  # noqa: E402
from attnroll.v1 import attnroll_pb2, pass_pb2  # noqa: E402

EXPLAIN = "/attnroll.v1.AttnrollService/Explain"


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


def serialized_pass(layers, wire):
    """The header and layer messages of a client-fused pass of layers
    [H, n, n], as bytes."""
    H, n, _ = layers[0].shape
    layout = pass_pb2.Layout(num_layers=len(layers), num_heads=H, num_tokens=n, batch_size=1,
                             heads_fused_by_client=True)
    header = options.header(layout, [options.analysis()], prefix_tokens=1,
                            grid=(14, 14) if n == 197 else None)
    out = [attnroll_pb2.ExplainRequest(header=header).SerializeToString()]
    for l, a in enumerate(layers):
        r = attnroll_pb2.ExplainRequest()
        r.layer.layer = l
        tensors.encode_into(r.layer.attention, a.mean(axis=0)[None, None], wire)
        out.append(r.SerializeToString())
    return out


def as_whole_pass(msgs):
    """serialized_pass's messages as one ExplainRequest.whole_pass, as bytes."""
    reqs = [attnroll_pb2.ExplainRequest.FromString(m) for m in msgs]
    r = attnroll_pb2.ExplainRequest()
    r.whole_pass.header.CopyFrom(reqs[0].header)
    for q in reqs[1:]:
        r.whole_pass.layers.add().CopyFrom(q.layer)
    return r.SerializeToString()


def protobuf_whole_pass(header, p, builder):
    """--ablation: the whole pass built with protobuf objects on this thread
    (what the client did before whole_pass.serialize)."""
    r = attnroll_pb2.ExplainRequest()
    r.whole_pass.header.CopyFrom(header)
    scratch = {}
    for l in range(len(p.layers)):
        p.fill(r.whole_pass.layers.add(), l, scratch)
    return r.SerializeToString()


class Path:
    """One timed path: run() -> (ms, result or None)."""

    def __init__(self, name, run, check=None):
        self.name, self.run, self.check = name, run, check
        self.samples, self.result = [], None


def timed(fn):
    def run():
        t0 = time.perf_counter()
        r = fn()
        return (time.perf_counter() - t0) * 1e3, r
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("ATTNROLL_BIN_DIR", "build"))
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ablation", action="store_true",
                    help="also the whole pass built with protobuf objects, and fused on one thread")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    _, torch_full, _ = torch_peers(1)
    att = capture_vit()
    layers = list(att)
    tlayers = [torch.from_numpy(a) for a in layers]
    want = numpy_full(layers, 0)[1:]
    paths = [Path("numpy in process (float32, what a user writes)",
                  timed(lambda: numpy_full(layers, 0))),
             Path("numpy in process, the CLS row only", timed(lambda: numpy_row(layers, 0))),
             Path("torch in process (1 thread)", timed(lambda: torch_full(tlayers, 0)))]
    srv, addr = start_server(args.bin_dir)
    try:
        c = attnroll.Client(addr, timeout=60)
        for name, kw in (("Python client, fp32, every head", dict(client_fusion="off")),
                         ("Python client, fp16, every head", dict(client_fusion="off", wire="fp16")),
                         ("Python client, fp32, heads fused on the client", dict(client_fusion="on")),
                         ("Python client, fp16, heads fused on the client",
                          dict(client_fusion="on", wire="fp16"))):
            paths.append(Path(name, timed(lambda kw=kw: c.explain(att, prefix_tokens=1,
                                                                  grid=(14, 14), **kw)), True))

        one_thread = pipeline.Builder(1)
        if args.ablation:
            def variant(serialize, builder, wire):
                def call():
                    saved = whole_pass.serialize, c._fuser
                    whole_pass.serialize, c._fuser = serialize, builder
                    try:
                        return c.explain(att, prefix_tokens=1, grid=(14, 14), client_fusion="on",
                                         wire=wire)
                    finally:
                        whole_pass.serialize, c._fuser = saved
                return call
            for wire in ("fp32", "fp16"):
                paths.append(Path("ablation: client-fused %s, the whole pass built with protobuf "
                                  "objects" % wire,
                                  timed(variant(protobuf_whole_pass, c._fuser, wire)), True))
                paths.append(Path("ablation: client-fused %s, written directly, fused on one "
                                  "thread" % wire,
                                  timed(variant(whole_pass.serialize, one_thread, wire)), True))

        def streamed(wire):
            def run():
                done = threading.Event()
                p = c.stream_pass(len(layers), prefix_tokens=1, grid=(14, 14), wire=wire,
                                  on_sent=lambda l: l == len(layers) - 2 and done.set())
                for a in layers[:-1]:
                    p.send(a)
                done.wait(30)
                t0 = time.perf_counter()
                p.send(layers[-1])
                r = p.finish()
                return (time.perf_counter() - t0) * 1e3, r
            return run
        for wire in ("fp32", "fp16"):
            paths.append(Path("streamed during the forward, left after the last layer "
                              "(%s, fused)" % wire, streamed(wire), True))
        # The floor: grpcio alone, on a channel with the client's options.
        ch = grpc.insecure_channel(addr, client_module._CHANNEL_OPTIONS)
        raw = ch.stream_unary(EXPLAIN)  # bytes in, bytes out
        unary = ch.unary_unary(EXPLAIN)  # a pass sent whole: one message
        for wire in ("fp32", "fp16"):
            msgs = serialized_pass(layers, wire)
            paths.append(Path("grpcio alone: the fused %s pass, pre-serialized, streamed "
                              "(13 messages)" % wire,
                              timed(lambda msgs=msgs: raw(iter(msgs), timeout=60))))
            paths[-1].bytes = sum(len(m) for m in msgs)
            whole = as_whole_pass(msgs)
            paths.append(Path("grpcio alone: the fused %s pass, pre-serialized, whole "
                              "(one unary call)" % wire,
                              timed(lambda whole=whole: unary(whole, timeout=60))))
            paths[-1].bytes = len(whole)
        small = layers[0][:, :12, :12]
        tiny = serialized_pass([small / small.sum(-1, keepdims=True)], "fp32")
        paths.append(Path("grpcio alone: one round trip (header + one 12 x 12 layer)",
                          timed(lambda: raw(iter(tiny), timeout=60))))
        for i in range(args.repeats + 2):
            for p in paths:
                ms, r = p.run()
                if i >= 2:
                    p.samples.append(ms)
                p.result = r
        ch.close()
        c.close()
        one_thread.close()
    finally:
        srv.terminate()
        srv.wait(timeout=20)
    base = float(np.median(paths[0].samples))
    rows = []
    for p in paths:
        ms = float(np.median(p.samples))
        row = dict(median_ms=ms, ratio_to_numpy=ms / base)
        if p.check:
            r = p.result
            row.update(bytes_sent=r.sent_bytes, max_abs_diff=float(np.abs(r.map.ravel() - want).max()),
                       server_total_ms=r.total_seconds * 1e3, server_compute_ms=r.compute_seconds * 1e3)
        elif hasattr(p, "bytes"):
            row.update(bytes_sent=p.bytes)
        rows.append((p.name, row))
    if args.json:
        print(json.dumps(dict(rows)))
        return
    print("ViT-B/16 CLS row (L=12, H=12, n=197), median of %d (interleaved), server on loopback "
          "(2 workers), channel open and warm, %d cores, numpy/torch 1 thread"
          % (args.repeats, os.cpu_count()))
    print()
    print("| path | median ms | / numpy | bytes sent | server ms (total / compute) "
          "| max abs diff vs numpy |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        srv_ms = ("%.2f / %.2f" % (r["server_total_ms"], r["server_compute_ms"])
                  if "server_total_ms" in r else "")
        print("| %s | %.2f | %.2f | %s | %s | %s |" % (
            name, r["median_ms"], r["ratio_to_numpy"],
            "{:,}".format(r["bytes_sent"]) if "bytes_sent" in r else "", srv_ms,
            "%.1e" % r["max_abs_diff"] if "max_abs_diff" in r else ""))


if __name__ == "__main__":
    main()
