#!/usr/bin/python3
"""Load and fault tests of a real attnroll-server process, on loopback only
(127.0.0.1 and [::1]), each bounded in count and time, each asserting numbers:

  SoakTest                  30 s of ViT-B/16-sized fp16 passes at concurrency 8: every
                            pass OK, RSS sampled every 0.5 s, bounded and flat.
  OverloadTest              a one-worker server under 16 concurrent clients: only OK and
                            RESOURCE_EXHAUSTED, and the metrics agree with the client's counts.
  HeaderFloodTest           30 stalled ExplainStream calls from 127.0.0.1 while a client
                            on [::1] is served; the server ends the stalled calls.
  DisconnectTest            50 passes cut after their first layer (cancel, channel closed,
                            client process killed): memory and passes in flight back to 0.
  ShutdownUnderLoadTest     SIGTERM while bench runs: NOT_SERVING during the grace, /metrics
                            answering, one pass in flight finishes, the grace ends another,
                            exit 0 within the grace.
  MetricsHonestTest         a known mix of traffic, counted exactly in /metrics; promtool
                            lints the scraped text.
  MetricsEndpointTest       /metrics answers with idle and half-sent connections open, and
                            its request timeout frees what more idle connections hold.
  ExitWhileScrapedTest      SIGTERM while /metrics is scraped flat out: exit 0; promptly
                            when nobody scrapes.
  MemoryAfterBurstTest      RSS goes back near its idle size after a burst of large passes.

Each test prints the numbers it measured on stderr ("  [soak] passes=... ").

The gRPC calls from Python use grpcio's generic calls with the attnroll messages
generated at test time by `protoc --python_out` from proto/attnroll/v1 (and
grpc.health.v1 from /usr/share/grpc-proto); grpc_tools is not needed.

Run: /usr/bin/python3 tests/e2e/load_test.py --bin-dir BUILD_DIR [unittest args]
Needs Debian's python3-grpcio, python3-protobuf, python3-numpy, protoc and
promtool (package prometheus).
"""

import atexit
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GRPC_PROTO = "/usr/share/grpc-proto"

# The messages, generated as top-level modules (a grpc/ package here would
# shadow grpcio's): attnroll/v1/*_pb2 and health_pb2.
_GEN = tempfile.mkdtemp(prefix="attnroll_load_pb_")
atexit.register(shutil.rmtree, _GEN, True)
subprocess.run(["protoc", "-I", os.path.join(REPO, "proto"), "--python_out", _GEN]
               + sorted(glob.glob(os.path.join(REPO, "proto", "attnroll", "v1", "*.proto"))),
               check=True)
subprocess.run(["protoc", "-I", os.path.join(GRPC_PROTO, "grpc", "health", "v1"),
                "--python_out", _GEN, "health.proto"], check=True)
sys.path.insert(0, _GEN)
from attnroll.v1 import attnroll_pb2 as api  # noqa: E402
from attnroll.v1 import audit_pb2  # noqa: E402
from attnroll.v1 import pass_pb2  # noqa: E402
from attnroll.v1 import tensor_pb2  # noqa: E402
import health_pb2  # noqa: E402

SERVICE = "/attnroll.v1.AttnrollService/"
MiB = 1 << 20
BENCH_SLACK_S = 60.0        # beyond a bench run's own duration before it counts as hung
RPC_TIMEOUT_S = 20.0        # deadline of every Python call that should end by itself sooner


# --------------------------------------------------------------------------
# Messages and calls.
# --------------------------------------------------------------------------


def header(L, H, n, request_id=""):
    """A PassHeader for one sequence of [L, H, n, n] attention, the default
    analysis (rollout of row 0)."""
    return pass_pb2.PassHeader(request_id=request_id,
                               layout=pass_pb2.Layout(num_layers=L, num_heads=H, num_tokens=n))


def layer(att, l):
    """The LayerChunk of layer l of att [L, H, n, n] (fp32, every head)."""
    a = np.ascontiguousarray(att[l][None], dtype="<f4")   # [B=1, H, n, n]
    return pass_pb2.LayerChunk(layer=l, attention=tensor_pb2.Tensor(
        dtype=tensor_pb2.DTYPE_FP32, shape=list(a.shape), data=a.tobytes()))


def explain_requests(att):
    """Every ExplainRequest of one pass of att."""
    L, H, n, _ = att.shape
    yield api.ExplainRequest(header=header(L, H, n))
    for l in range(L):
        yield api.ExplainRequest(layer=layer(att, l))


def explain_call(channel):
    return channel.stream_unary(SERVICE + "Explain",
                                request_serializer=api.ExplainRequest.SerializeToString,
                                response_deserializer=api.ExplainResponse.FromString)


def stream_call(channel):
    return channel.stream_stream(SERVICE + "ExplainStream",
                                 request_serializer=api.StreamRequest.SerializeToString,
                                 response_deserializer=api.StreamResponse.FromString)


def compare_call(channel):
    return channel.unary_unary(SERVICE + "Compare",
                               request_serializer=audit_pb2.CompareRequest.SerializeToString,
                               response_deserializer=audit_pb2.CompareResponse.FromString)


def health_check(channel, timeout=2.0):
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
    return check(health_pb2.HealthCheckRequest(service="attnroll.v1.AttnrollService"),
                 timeout=timeout).status


def map_values(response):
    """The float32 values of the first map of the first analysis."""
    t = response.results[0].maps[0]
    return np.frombuffer(t.data, dtype="<f4")


def uniform_attention(L, H, n):
    return np.full((L, H, n, n), 1.0 / n, dtype=np.float32)


def uniform_rollout_row(n, L):
    """Row 0 of rollout of L uniform layers (residual 0.5): 0.5^L e_0 + (1 - 0.5^L) / n."""
    row = np.full(n, (1.0 - 0.5 ** L) / n)
    row[0] += 0.5 ** L
    return row


def random_attention(seed, L, H, n):
    logits = np.random.default_rng(seed).normal(size=(L, H, n, n))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


class HeldPass:
    """An Explain call that sends its header and first `sent` layers, then
    waits (bounded) until release() (the rest is sent, the pass completes) or
    abandon() (the request stream stops where it is; LoadCase.tearDown
    abandons every one still waiting)."""

    every = []

    def __init__(self, channel, att, sent=1):
        HeldPass.every.append(self)
        self.att = att
        self._go = threading.Event()
        self._complete = False
        self.sent = threading.Event()

        def requests():
            L, H, n, _ = att.shape
            yield api.ExplainRequest(header=header(L, H, n))
            for l in range(sent):
                yield api.ExplainRequest(layer=layer(att, l))
            self.sent.set()
            self._go.wait(RPC_TIMEOUT_S)
            if self._complete:
                for l in range(sent, L):
                    yield api.ExplainRequest(layer=layer(att, l))

        self.future = explain_call(channel).future(requests(), timeout=RPC_TIMEOUT_S)

    def release(self):
        self._complete = True
        self._go.set()

    def abandon(self):
        self._go.set()


# --------------------------------------------------------------------------
# /metrics and /proc.
# --------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset of (label, value)): float} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m is None:
            raise AssertionError("unparseable metrics line: %r" % line)
        labels = frozenset(_LABEL_RE.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def rss_bytes(pid):
    """VmRSS of process pid, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


class LoadCase(e2e_harness.ServerTestCase):
    """Helpers shared by the tests below: scraping, bench, bounded polling,
    and processes killed in tearDown."""

    tmp_prefix = "attnroll_load_"
    cli_timeout_s = 120.0

    def setUp(self):
        super().setUp()
        self.procs = []
        self.channels = []

    def tearDown(self):
        for h in HeldPass.every:
            h.abandon()
        HeldPass.every.clear()
        e2e_harness.kill_all(self.procs)
        for c in self.channels:
            c.close()

    def channel(self, address=None):
        c = grpc.insecure_channel(address or "127.0.0.1:%d" % self.port,
                                  options=[("grpc.max_send_message_length", -1),
                                           ("grpc.max_receive_message_length", -1),
                                           ("grpc.use_local_subchannel_pool", 1)])
        self.channels.append(c)
        return c

    def scrape_text(self, timeout=5.0):
        return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=timeout).read().decode()

    def scrape(self):
        return parse_metrics(self.scrape_text())

    @staticmethod
    def value(samples, name, **labels):
        """The sample name{labels}, 0 if it is absent (a labelled counter
        appears at its first increment)."""
        return samples.get((name, frozenset(labels.items())), 0.0)

    def metric(self, name, **labels):
        return self.value(self.scrape(), name, **labels)

    def wait_for(self, what, predicate, timeout):
        """Polls predicate() every 20 ms until it is true; fails after timeout s."""
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > deadline:
                self.fail("timed out after %.1f s waiting for %s" % (timeout, what))
            time.sleep(0.02)

    def assert_idle(self, timeout=5.0):
        """Passes in flight and reserved memory go back to 0 (polled)."""
        def idle():
            s = self.scrape()
            return (self.value(s, "attnroll_passes_in_flight") == 0
                    and self.value(s, "attnroll_memory_reserved_bytes") == 0)
        self.wait_for("passes in flight and reserved memory at 0", idle, timeout)

    def start_bench(self, *args, server=None):
        """Starts `attnroll bench ARGS --json` (on this class's server unless
        given); returns the Popen."""
        cmd = ([self.cli_bin, "--server", server or "127.0.0.1:%d" % self.port, "bench"]
               + [str(a) for a in args] + ["--json"])
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.cmd = cmd
        self.procs.append(p)
        return p

    def finish_bench(self, p, timeout):
        """Waits for a bench started with start_bench, asserts exit 0 and
        one JSON line; returns the report."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate(timeout=10)
            self.fail("bench did not finish within %.0f s: %s" % (timeout, " ".join(p.cmd)))
        self.assertEqual(p.returncode, 0, "bench failed: %s\nstdout:\n%s\nstderr:\n%s"
                         % (" ".join(p.cmd), out, err))
        lines = [l for l in out.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, out)
        d = json.loads(lines[0])
        self.assertEqual(sum(d["status"].values()), d["passes"], d["status"])
        return d

    def bench(self, *args, server=None, timeout=120.0):
        return self.finish_bench(self.start_bench(*args, server=server), timeout)


def report(name, **numbers):
    """One line of measured numbers on stderr (next to unittest's output)."""
    items = " ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                     for k, v in numbers.items())
    print("\n  [%s] %s" % (name, items), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# 1. Soak.
# --------------------------------------------------------------------------


class SoakTest(LoadCase):
    MAX_MEMORY = 512 * MiB
    # gRPC's resource quota. 64 MiB is too small for this load: the HTTP/2
    # windows gRPC grows from its bandwidth-delay estimate (4 connections, 8
    # streams of ~1 MB messages) fill it, and its destructive reclamation
    # then abandons a stream of an admitted pass now and then (measured: 15
    # of 2505 passes in 25 s, RESOURCE_EXHAUSTED at the client, CANCELLED in
    # the server's counts). At 128 MiB it saw none in most 30 s runs, but two
    # of four full runs ended one pass INTERNAL or stalled every pass for
    # about 9 s near the end. The INTERNAL is gRPC's transport, not the
    # server: reproduced at 128 MiB with concurrency 16 (1 pass of 2983 in
    # 20 s), the client got "Received RST_STREAM with error code 1" (an HTTP/2
    # PROTOCOL_ERROR reset by the server's transport) for a pass the server
    # had received whole and counted OK. gRPC's trace of such a run names it:
    # "frame of size 0 overflows local window of -3312496" (the client's empty
    # END_STREAM frame, checked against a stream window gone negative: gRPC
    # 1.51's bandwidth-delay probe had grown the windows to its estimate, up
    # to 17.6 MB here, and shrinks them under quota pressure), then "Pending
    # writes failed due to stream closure" for the OK trailers. The ~9 s stall
    # was not reproduced in isolated runs. 256 MiB, with the bound below
    # counting it, until the server's windows are fixed.
    GRPC_MEMORY = 256 * MiB
    # Allowance above the process's idle RSS (code, gRPC's threads and
    # arenas, the metrics server) before the budgets count.
    BASE_SLACK = 64 * MiB
    DURATION_S = 30
    # Flat: the level (median) of the last third of the samples within 10% of
    # the middle third's, or at most LEVEL_STEP above it: the allocator's heap
    # grows in steps, and one step (a middle third at 187 MiB, the last at
    # 211: 13% up) failed a CI run at 10% alone. A leak does not stop at a step:
    # 40 MiB in a third (10 s) is about 20 KiB per pass at this load's ~200
    # passes/s, or 4 lost passes of 11.2 MB (ViT-B/16 in fp16).
    LEVEL_TOLERANCE = 0.10
    LEVEL_STEP = 40 * MiB
    # And the last third's peak within 25% of the middle third's. The peak of
    # a third is one 0.5 s sample: on this shared 2-core machine it moved by
    # up to +-27% between thirds of runs whose medians stayed within 9%, a
    # transient (8 passes' messages and gRPC's buffers at one instant), not
    # growth.
    PEAK_TOLERANCE = 0.25

    server_flags = ("--max-memory-bytes", MAX_MEMORY, "--grpc-memory-bytes", GRPC_MEMORY)

    def test_soak_every_pass_ok_and_rss_bounded_and_flat(self):
        pid = self.server.pid
        idle = rss_bytes(pid)
        bench = self.start_bench("--shape", "12,12,197", "--wire", "fp16", "--concurrency", 8,
                                 "--duration", self.DURATION_S, "--warmup", 1)
        samples = []                       # (seconds since start, RSS)
        start = time.monotonic()
        deadline = start + self.DURATION_S + BENCH_SLACK_S
        while bench.poll() is None and time.monotonic() < deadline:
            samples.append((time.monotonic() - start, rss_bytes(pid)))
            time.sleep(0.5)
        d = self.finish_bench(bench, timeout=10)
        self.assertEqual(d["status"], {"OK": d["passes"]}, d["status"])
        self.assertGreater(d["passes"], 0)
        bound = self.MAX_MEMORY + self.GRPC_MEMORY + idle + self.BASE_SLACK
        rss = [r for _, r in samples]
        peak = max(rss)
        third = len(rss) // 3
        middle, last = rss[third:2 * third], rss[2 * third:]
        mid_max, last_max = max(middle), max(last)
        mid_level, last_level = float(np.median(middle)), float(np.median(last))
        series = " ".join("%.0f" % (r / MiB) for r in rss)
        report("soak", passes=d["passes"], passes_per_s=d["passes_per_second"],
               p50_ms=d["latency_ms"]["p50"], p99_ms=d["latency_ms"]["p99"],
               samples=len(rss), idle_rss_mib=idle / MiB, peak_rss_mib=peak / MiB,
               middle_third_max_mib=mid_max / MiB, last_third_max_mib=last_max / MiB,
               middle_third_median_mib=mid_level / MiB, last_third_median_mib=last_level / MiB,
               bound_mib=bound / MiB)
        self.assertGreaterEqual(len(rss), 2 * self.DURATION_S - 4)
        self.assertLessEqual(peak, bound, "RSS (MiB, every 0.5 s): " + series)
        self.assertLessEqual(last_level, max((1 + self.LEVEL_TOLERANCE) * mid_level,
                                             mid_level + self.LEVEL_STEP),
                             "RSS grew (median of the thirds); MiB, every 0.5 s: " + series)
        self.assertLessEqual(last_max, (1 + self.PEAK_TOLERANCE) * mid_max,
                             "RSS grew (peak of the thirds); MiB, every 0.5 s: " + series)
        # The server counted the same passes (warm-up included), and let go of them.
        s = self.scrape()
        self.assertEqual(self.value(s, "attnroll_passes_total", rpc="Explain", code="OK"),
                         d["passes"] + d["warmup_passes"])
        self.assert_idle()


# --------------------------------------------------------------------------
# 2. Overload.
# --------------------------------------------------------------------------


class OverloadTest(LoadCase):
    # One worker, one queued new pass, two in flight, no waiting for room;
    # --client-share 1: bench is one client, and its share is not what this
    # test is about.
    server_flags = ("--workers", 1, "--queue-size", 1, "--max-passes-in-flight", 2,
                    "--admission-wait-seconds", 0, "--client-share", 1)

    def test_only_ok_and_resource_exhausted_and_metrics_agree(self):
        d = self.bench("--shape", "4,4,64", "--concurrency", 16, "--requests", 200,
                       "--warmup", 0)
        status = d["status"]
        ok, refused = status.get("OK", 0), status.get("RESOURCE_EXHAUSTED", 0)
        s = self.scrape()
        reasons = {r: self.value(s, "attnroll_refusals_total", reason=r)
                   for r in ("queue", "passes", "memory", "client_share", "idle", "limits",
                             "auth", "shutdown")}
        report("overload", passes=d["passes"], ok=ok, resource_exhausted=refused,
               refusals=reasons, queue_rejections=self.value(
                   s, "attnroll_worker_queue_rejections_total"))
        self.assertEqual(d["passes"], 200)
        self.assertEqual(set(status) - {"OK", "RESOURCE_EXHAUSTED"}, set(), status)
        self.assertGreaterEqual(ok, 1)
        self.assertGreaterEqual(refused, 1, "16 clients against 2 passes in flight: none refused")
        # The report names the first refusal: the limit that kept it out.
        first = d["errors"]["RESOURCE_EXHAUSTED"]["message"]
        self.assertRegex(first, r"^(passes: |server: worker queue full)", first)
        self.assertEqual(set(d["errors"]), {"RESOURCE_EXHAUSTED"}, d["errors"])
        self.assertEqual(self.value(s, "attnroll_rpcs_total", rpc="Explain", code="OK"), ok)
        self.assertEqual(self.value(s, "attnroll_rpcs_total", rpc="Explain",
                                    code="RESOURCE_EXHAUSTED"), refused)
        self.assertEqual(reasons["queue"] + reasons["passes"], refused, reasons)
        self.assertEqual(sum(reasons.values()), refused, reasons)
        self.assertEqual(self.value(s, "attnroll_worker_queue_rejections_total"),
                         reasons["queue"])
        self.assertEqual(self.value(s, "attnroll_passes_total", rpc="Explain", code="OK"), ok)
        self.assertEqual(self.value(s, "attnroll_passes_in_flight"), 0)
        self.assertEqual(self.value(s, "attnroll_memory_reserved_bytes"), 0)
        self.assertEqual(self.value(s, "attnroll_admission_waiting"), 0)
        for lane in ("step", "long", "new"):
            self.assertEqual(self.value(s, "attnroll_worker_queue_depth", lane=lane), 0, lane)


# --------------------------------------------------------------------------
# 3. Header-only flood and stalled streams.
# --------------------------------------------------------------------------


def ipv6_loopback_bindable():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class HeaderFloodTest(LoadCase):
    listen = "127.0.0.1:0,[::1]:0"
    server_flags = ("--idle-timeout-seconds", 1, "--stream-idle-timeout-seconds", 1,
                    "--max-passes-in-flight", 8, "--client-share", 0.5)
    FLOOD = 30
    SHARE = 4          # 0.5 of 8 passes in flight

    @classmethod
    def setUpClass(cls):
        if not ipv6_loopback_bindable():
            raise unittest.SkipTest("[::1] cannot be bound here: the flood needs two client "
                                    "addresses (127.0.0.1 and [::1])")
        super().setUpClass()

    def test_stalled_header_flood_does_not_starve_another_client(self):
        self.assertEqual(len(self.addresses), 2, self.addresses)
        flood_channel = self.channel(self.addresses[0])
        honest = self.addresses[1]
        self.assertTrue(honest.startswith("[::1]:"), honest)
        stop = threading.Event()
        calls, ended = [], []
        start = time.monotonic()

        def requests(i):
            yield api.StreamRequest(request_id="flood-%d" % i, header=header(24, 16, 1024))
            stop.wait(RPC_TIMEOUT_S)

        def watch(call, i):
            # Reads the responses until the server ends the call.
            responses = []
            try:
                for r in call:
                    responses.append(r)
            except grpc.RpcError:
                pass
            ended.append((i, time.monotonic() - start, call.code(), responses))

        watchers = []
        try:
            for i in range(self.FLOOD):
                call = stream_call(flood_channel)(requests(i), timeout=RPC_TIMEOUT_S)
                calls.append(call)
                t = threading.Thread(target=watch, args=(call, i), daemon=True)
                t.start()
                watchers.append(t)
            # The flooder gets its share and no more.
            self.wait_for("the flooder's passes admitted",
                          lambda: self.metric("attnroll_passes_in_flight") >= self.SHARE, 5)
            admitted = self.metric("attnroll_passes_in_flight")
            # Meanwhile the other client's passes are served: bench and Python calls.
            bench = self.start_bench("--shape", "4,4,64", "--concurrency", 2, "--requests", 40,
                                     "--warmup", 0, server=honest)
            honest_channel = self.channel(honest)
            att = uniform_attention(3, 2, 16)
            honest_ok, honest_during = 0, 0
            for _ in range(10):
                r = explain_call(honest_channel)(explain_requests(att), timeout=RPC_TIMEOUT_S)
                np.testing.assert_allclose(map_values(r), uniform_rollout_row(16, 3),
                                           rtol=0, atol=1e-6)
                honest_ok += 1
                if not ended:
                    honest_during += 1
            in_flight_during = self.metric("attnroll_passes_in_flight")
            bench = self.finish_bench(bench, timeout=60)
            bench_done = time.monotonic() - start
            # The server ends every stalled call on its own, long before their deadline.
            for t in watchers:
                t.join(timeout=max(0.1, start + 10 - time.monotonic()))
            self.assertEqual(len(ended), self.FLOOD,
                             "stalled calls still open after 10 s: %d" % (self.FLOOD - len(ended)))
        finally:
            stop.set()
            for c in calls:
                c.cancel()
        last_end = max(t for _, t, _, _ in ended)
        first_end = min(t for _, t, _, _ in ended)
        codes = {}
        in_band = {}
        for _, _, code, responses in ended:
            codes[code.name] = codes.get(code.name, 0) + 1
            for r in responses:
                key = r.error.code_name if r.HasField("error") else r.WhichOneof("message")
                in_band[key] = in_band.get(key, 0) + 1
        s = self.scrape()
        reasons = {r: self.value(s, "attnroll_refusals_total", reason=r)
                   for r in ("idle", "client_share", "queue", "passes", "memory")}
        report("flood", admitted=int(admitted), honest_ok=honest_ok,
               honest_during_flood=honest_during, in_flight_during=int(in_flight_during),
               bench_ok=bench["ok_passes"], bench_done_s=bench_done, first_end_s=first_end,
               last_end_s=last_end,
               call_codes=codes, in_band=in_band, refusals=reasons)
        self.assertEqual(admitted, self.SHARE)
        self.assertEqual(honest_ok, 10)
        self.assertGreaterEqual(honest_during, 1, "the flood ended before any honest pass")
        self.assertEqual(bench["status"], {"OK": 40}, bench["status"])
        # Every flood call was ended by the server, not by its 20 s deadline:
        # 1 s idle timeouts, of a call holding a stalled pass or of a stream
        # with none open (its header refused in-band). The client sees
        # CANCELLED (the server cancels the call; the status it records,
        # DEADLINE_EXCEEDED with the reason idle, does not reach the client).
        self.assertLess(last_end, 8.0)
        self.assertGreaterEqual(first_end, 0.9, "ended before the 1 s idle timeout")
        self.assertEqual(set(codes) - {"CANCELLED", "DEADLINE_EXCEEDED"}, set(), codes)
        # The refused headers were answered in-band, each with RESOURCE_EXHAUSTED.
        self.assertEqual(in_band, {"RESOURCE_EXHAUSTED": self.FLOOD - admitted}, in_band)
        self.assertGreaterEqual(reasons["idle"], admitted)
        refused = (reasons["client_share"] + reasons["queue"] + reasons["passes"]
                   + reasons["memory"])
        self.assertEqual(refused, self.FLOOD - admitted, reasons)
        self.assertGreaterEqual(reasons["client_share"], 1, reasons)
        self.assert_idle()


# --------------------------------------------------------------------------
# 4. Disconnects mid-pass.
# --------------------------------------------------------------------------

# A client process that opens N Explain calls, sends each one's header and
# first layer (uniform attention [L, H, n, n]), then waits to be killed.
_KILLED_CLIENT = r"""
import sys, threading
sys.path.insert(0, %(gen)r)
import grpc
import numpy as np
from attnroll.v1 import attnroll_pb2 as api, pass_pb2, tensor_pb2
L, H, n = %(shape)r
a = np.full((1, H, n, n), 1.0 / n, dtype="<f4").tobytes()
hold = threading.Event()
def requests():
    yield api.ExplainRequest(header=pass_pb2.PassHeader(
        layout=pass_pb2.Layout(num_layers=L, num_heads=H, num_tokens=n)))
    yield api.ExplainRequest(layer=pass_pb2.LayerChunk(layer=0, attention=tensor_pb2.Tensor(
        dtype=tensor_pb2.DTYPE_FP32, shape=[1, H, n, n], data=a)))
    hold.wait(60)
channel = grpc.insecure_channel(%(target)r)
call = channel.stream_unary("/attnroll.v1.AttnrollService/Explain",
                            request_serializer=api.ExplainRequest.SerializeToString,
                            response_deserializer=api.ExplainResponse.FromString)
futures = [call.future(requests(), timeout=60) for _ in range(%(count)d)]
hold.wait(60)
"""


class DisconnectTest(LoadCase):
    L, H, N = 4, 4, 64
    LAYER_BYTES = H * N * N * 4
    BATCH = 10

    def held_batch(self, channels, expected_bytes):
        """Opens one held pass per channel (header and one layer each) and
        waits until the server has handled every one of those layers."""
        att = uniform_attention(self.L, self.H, self.N)
        held = [HeldPass(c, att) for c in channels]
        self.wait_for("%d layers handled" % len(held),
                      lambda: self.metric("attnroll_attention_received_bytes_total")
                      >= expected_bytes, 10)
        self.assertEqual(self.metric("attnroll_passes_in_flight"), len(held))
        return held

    def test_cut_passes_free_everything(self):
        received = 0
        ended = []
        # 20 cancelled by the client, in two batches on one channel.
        c = self.channel()
        for _ in range(2):
            received += self.BATCH * self.LAYER_BYTES
            held = self.held_batch([c] * self.BATCH, received)
            for h in held:
                h.future.cancel()
            for h in held:
                h.abandon()
                ended.append(("cancel", h.future.cancelled()))
            self.assert_idle()
        # 20 whose channel (its own TCP connection) is closed under them.
        for _ in range(2):
            received += self.BATCH * self.LAYER_BYTES
            chans = [self.channel() for _ in range(self.BATCH)]
            held = self.held_batch(chans, received)
            for ch in chans:
                ch.close()
            for h in held:
                h.abandon()
                try:
                    h.future.result(timeout=5)
                    ended.append(("close", "OK"))
                except grpc.FutureCancelledError:
                    ended.append(("close", "cancelled"))
                except grpc.RpcError as e:
                    ended.append(("close", e.code().name))
            self.assert_idle()
        # 10 held by a client process that is killed (no HTTP/2 goodbye).
        received += self.BATCH * self.LAYER_BYTES
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_CLIENT % dict(
                gen=_GEN, shape=(self.L, self.H, self.N), target="127.0.0.1:%d" % self.port,
                count=self.BATCH)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(child)
        self.wait_for("the killed client's layers handled",
                      lambda: self.metric("attnroll_attention_received_bytes_total")
                      >= received, 15)
        self.assertEqual(self.metric("attnroll_passes_in_flight"), self.BATCH)
        child.kill()
        child.wait(timeout=10)
        self.assert_idle()
        cancelled = self.metric("attnroll_rpcs_total", rpc="Explain", code="CANCELLED")
        # A normal pass still works, with the right map.
        att = uniform_attention(self.L, self.H, self.N)
        r = explain_call(self.channel())(explain_requests(att), timeout=RPC_TIMEOUT_S)
        np.testing.assert_allclose(map_values(r), uniform_rollout_row(self.N, self.L),
                                   rtol=0, atol=1e-6)
        s = self.scrape()
        report("disconnects", cut=5 * self.BATCH, rpcs_cancelled=int(cancelled),
               client_side=sorted(set(ended)),
               passes_cancelled=int(self.value(s, "attnroll_passes_total", rpc="Explain",
                                               code="CANCELLED")))
        self.assertEqual(cancelled, 5 * self.BATCH)
        self.assertEqual(self.value(s, "attnroll_passes_total", rpc="Explain", code="CANCELLED"),
                         5 * self.BATCH)
        self.assertEqual(self.value(s, "attnroll_rpcs_total", rpc="Explain", code="OK"), 1)
        self.assertEqual(self.value(s, "attnroll_attention_received_bytes_total"),
                         received + self.L * self.LAYER_BYTES)
        self.assertEqual(self.value(s, "attnroll_open_connections"), 0)
        self.assertEqual(self.value(s, "attnroll_passes_in_flight"), 0)
        self.assertEqual(self.value(s, "attnroll_memory_reserved_bytes"), 0)


# --------------------------------------------------------------------------
# 5. Shutdown under load.
# --------------------------------------------------------------------------


class ShutdownUnderLoadTest(LoadCase):
    GRACE_S = 5.0
    MARGIN_S = 1.5
    BENCH_S = 8
    server_flags = ("--shutdown-grace-seconds", GRACE_S)

    def test_sigterm_drains_then_exits_zero_within_the_grace(self):
        att = uniform_attention(3, 2, 16)
        # Two passes in flight at SIGTERM: one finishes during the grace, the
        # other never does (the grace ends it).
        finishing = HeldPass(self.channel(), att)
        stuck = HeldPass(self.channel(), att)
        self.wait_for("both held passes admitted",
                      lambda: self.metric("attnroll_passes_in_flight") == 2, 5)
        bench = self.start_bench("--shape", "12,12,197", "--wire", "fp16", "--concurrency", 4,
                                 "--duration", self.BENCH_S, "--warmup", 0)
        self.wait_for("bench passes completing",
                      lambda: self.metric("attnroll_rpcs_total", rpc="Explain", code="OK") >= 20,
                      10)
        time.sleep(2.0)  # ~2 s of load
        ok_before = self.metric("attnroll_rpcs_total", rpc="Explain", code="OK")
        health_channel = self.channel()
        self.assertEqual(health_check(health_channel), health_pb2.HealthCheckResponse.SERVING)
        # Scrapes go on through the whole shutdown, until the process is gone.
        scrapes = []                  # (seconds after SIGTERM, passes in flight) of each answer
        scraper_stop = threading.Event()
        t0 = time.monotonic() + 3600  # set below, just before SIGTERM

        def scraper():
            while not scraper_stop.is_set() and self.server.poll() is None:
                try:
                    s = parse_metrics(urllib.request.urlopen(
                        "http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=2).read()
                        .decode())
                    scrapes.append((time.monotonic() - t0,
                                    self.value(s, "attnroll_passes_in_flight")))
                except OSError:
                    pass
                scraper_stop.wait(0.02)
        scraping = threading.Thread(target=scraper, daemon=True)
        t0 = time.monotonic()
        scraping.start()
        self.server.send_signal(signal.SIGTERM)
        # During the grace the port is open and health says NOT_SERVING.
        statuses = []

        def not_serving():
            statuses.append(health_check(health_channel))
            return statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        self.wait_for("health NOT_SERVING", not_serving, 3)
        t_not_serving = time.monotonic() - t0
        # A new pass is refused as retryable.
        with self.assertRaises(grpc.RpcError) as refused:
            explain_call(self.channel())(explain_requests(att), timeout=RPC_TIMEOUT_S)
        self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("shutting down", refused.exception.details())
        # The pass in flight finishes, with the right map.
        finishing.release()
        r = finishing.future.result(timeout=self.GRACE_S)
        np.testing.assert_allclose(map_values(r), uniform_rollout_row(16, 3), rtol=0, atol=1e-6)
        t_finished = time.monotonic() - t0
        # Still serving health (NOT_SERVING) while the stuck pass holds the grace.
        self.assertEqual(health_check(health_channel), health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            rc = self.server.wait(timeout=self.GRACE_S + self.MARGIN_S)
        except subprocess.TimeoutExpired:
            self.fail("server still running %.1f s after SIGTERM" % (time.monotonic() - t0))
        t_exit = time.monotonic() - t0
        scraper_stop.set()
        scraping.join(timeout=5)
        stuck.abandon()
        with self.assertRaises(grpc.RpcError) as cut:
            stuck.future.result(timeout=5)
        d = self.finish_bench(bench, timeout=self.BENCH_S + BENCH_SLACK_S)
        t_bench = time.monotonic() - t0
        report("shutdown", grace_s=self.GRACE_S, not_serving_after_s=t_not_serving,
               held_pass_ok_after_s=t_finished, exit_after_s=t_exit, exit_code=rc,
               stuck_pass=cut.exception.code().name, bench_done_after_s=t_bench,
               bench_status=d["status"], ok_before_sigterm=int(ok_before),
               scrapes_during_grace=len([t for t, _ in scrapes if 0 < t < self.GRACE_S]))
        self.assertEqual(rc, 0, self._server_stderr())
        # /metrics answered during the grace: the stuck pass still in flight
        # once the other had finished.
        late = [n for t, n in scrapes if t_finished + 0.1 < t < self.GRACE_S - 0.5]
        self.assertGreaterEqual(len(late), 10, scrapes)
        self.assertEqual(set(late), {1.0}, late)
        self.assertGreaterEqual(t_exit, self.GRACE_S - 0.5, "the grace was cut short")
        self.assertLessEqual(t_exit, self.GRACE_S + self.MARGIN_S)
        self.assertIn(cut.exception.code(),
                      (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE))
        status = d["status"]
        self.assertEqual(set(status) - {"OK", "UNAVAILABLE", "CANCELLED"}, set(), status)
        self.assertGreaterEqual(status.get("OK", 0), 20)
        self.assertGreaterEqual(status.get("UNAVAILABLE", 0), 1)
        with open(self.server_log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        events = {}
        for event in ("shutting down", "grpc server stopped", "stopped"):
            m = re.search(r"^(\S+)Z INFO %s\b.*$" % event, log, re.M)
            self.assertIsNotNone(m, "no %r in the server's log" % event)
            events[event] = m.group(0)
        print("\n    ".join([""] + list(events.values())), file=sys.stderr)
        self.assertRegex(events["shutting down"], r"signal=SIGTERM grace_seconds=5\b")


# --------------------------------------------------------------------------
# 6. Metrics are honest and well-formed.
# --------------------------------------------------------------------------


class MetricsHonestTest(LoadCase):
    MAX_MEMORY = 1 << 30
    server_flags = ("--max-tokens", 256, "--max-memory-bytes", MAX_MEMORY)

    def cli_explain(self, path):
        # Every head sent (no fusion on the client), so the bytes and the
        # refusals counted are the server's.
        return self.cli("explain", "--attention", path, "--out",
                        os.path.join(self.tmp, "out.npy"), "--json", "--client-fusion", "off")

    def test_counters_match_the_traffic_and_promtool_accepts_them(self):
        L, H, n = 6, 4, 96
        layer_bytes = H * n * n * 4
        sent_bytes = 0
        ch = self.channel()
        # 5 OK passes over Explain (their worker time, as the responses say).
        compute = []
        for seed in range(5):
            att = random_attention(seed, L, H, n)
            r = explain_call(ch)(explain_requests(att), timeout=RPC_TIMEOUT_S)
            self.assertEqual(len(map_values(r)), n)
            compute.append(r.timing.compute_seconds)
            sent_bytes += L * layer_bytes
        # 3 INVALID_ARGUMENT through the CLI; each fails on its bad layer, and
        # the layers up to it are received.
        good = random_attention(7, L, H, n)
        bad_layers = []
        for name, l, poison in (("negative", 1, -1.0), ("nan", 3, np.nan), ("rowsum", 5, 0.9)):
            bad = good.copy()
            if name == "rowsum":
                bad[l, 0, 2] *= poison
            else:
                bad[l, 1, 2, 3] = poison
            res = self.cli_explain(self._write(name, bad))
            self.assertEqual(res.returncode, 1, res.stderr)
            self.assertIn("INVALID_ARGUMENT", res.stderr)
            bad_layers.append(l)
            sent_bytes += (l + 1) * layer_bytes
        # 1 refused at its header: 300 tokens over --max-tokens 256.
        res = self.cli_explain(self._write("too_long", uniform_attention(2, 2, 300)))
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn("RESOURCE_EXHAUSTED", res.stderr)
        # 1 Compare.
        a = np.random.default_rng(1).random(64).astype("<f4")
        b = np.random.default_rng(2).random(64).astype("<f4")
        cmp = compare_call(ch)(audit_pb2.CompareRequest(
            a=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FP32, shape=[64], data=a.tobytes()),
            b=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FP32, shape=[64], data=b.tobytes())),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(len(cmp.comparisons), 1)
        # 1 ExplainStream: one pass OK, one answered in-band with INVALID_ARGUMENT
        # (a negative value in its layer 0); the call ends OK.
        sl, sh, sn = 2, 2, 32
        s_good = random_attention(11, sl, sh, sn)
        s_bad = s_good.copy()
        s_bad[0, 0, 0, 0] = -0.5
        reqs = [api.StreamRequest(request_id="good", header=header(sl, sh, sn)),
                api.StreamRequest(request_id="bad", header=header(sl, sh, sn))]
        reqs += [api.StreamRequest(request_id="good", layer=layer(s_good, l)) for l in range(sl)]
        reqs += [api.StreamRequest(request_id="bad", layer=layer(s_bad, 0)),
                 api.StreamRequest(request_id="bad", layer=layer(s_bad, 1)),
                 api.StreamRequest(request_id="bad", end=api.PassEnd()),
                 api.StreamRequest(request_id="good", end=api.PassEnd())]
        responses = list(stream_call(ch)(iter(reqs), timeout=RPC_TIMEOUT_S))
        by_id = {r.request_id: r for r in responses}
        self.assertEqual(set(by_id), {"good", "bad"}, responses)
        self.assertTrue(by_id["good"].HasField("result"))
        self.assertEqual(by_id["bad"].error.code_name, "INVALID_ARGUMENT")
        compute.append(by_id["good"].result.timing.compute_seconds)
        # The bad pass's layer 0 is received; its layer 1 is dropped unread.
        stream_layer = sh * sn * sn * 4
        sent_bytes += sl * stream_layer + stream_layer

        text = self.scrape_text()
        s = parse_metrics(text)
        v = lambda name, **labels: self.value(s, name, **labels)  # noqa: E731
        got = {
            "explain_ok": v("attnroll_rpcs_total", rpc="Explain", code="OK"),
            "explain_invalid": v("attnroll_rpcs_total", rpc="Explain", code="INVALID_ARGUMENT"),
            "explain_exhausted": v("attnroll_rpcs_total", rpc="Explain",
                                   code="RESOURCE_EXHAUSTED"),
            "compare_ok": v("attnroll_rpcs_total", rpc="Compare", code="OK"),
            "stream_ok": v("attnroll_rpcs_total", rpc="ExplainStream", code="OK"),
            "info": v("attnroll_rpcs_total", rpc="GetServerInfo", code="OK"),
            "bytes": v("attnroll_attention_received_bytes_total"),
            "compute_sum": v("attnroll_compute_seconds_sum", analysis="rollout"),
        }
        report("metrics", **got, compute_from_responses=sum(compute))
        self.assertEqual(got["explain_ok"], 5)
        self.assertEqual(got["explain_invalid"], 3)
        self.assertEqual(got["explain_exhausted"], 1)
        self.assertEqual(got["compare_ok"], 1)
        self.assertEqual(got["stream_ok"], 1)
        # Every rpc code that occurred, and no other.
        rpcs = {dict(k[1])["rpc"] + "/" + dict(k[1])["code"]: val for k, val in s.items()
                if k[0] == "attnroll_rpcs_total"}
        self.assertEqual(set(rpcs) - {"GetServerInfo/OK"},
                         {"Explain/OK", "Explain/INVALID_ARGUMENT", "Explain/RESOURCE_EXHAUSTED",
                          "Compare/OK", "ExplainStream/OK"}, rpcs)
        # Passes: the ones whose header was accepted or refused, by outcome.
        self.assertEqual(v("attnroll_passes_total", rpc="Explain", code="OK"), 5)
        self.assertEqual(v("attnroll_passes_total", rpc="Explain", code="INVALID_ARGUMENT"), 3)
        self.assertEqual(v("attnroll_passes_total", rpc="ExplainStream", code="OK"), 1)
        self.assertEqual(v("attnroll_passes_total", rpc="ExplainStream",
                           code="INVALID_ARGUMENT"), 1)
        # Refusals: the one over --max-tokens, nothing else.
        for reason in ("queue", "passes", "memory", "client_share", "idle", "limits", "auth",
                       "shutdown"):
            self.assertIn(("attnroll_refusals_total", frozenset({("reason", reason)})), s, reason)
            self.assertEqual(v("attnroll_refusals_total", reason=reason),
                             1 if reason == "limits" else 0, reason)
        self.assertEqual(v("attnroll_worker_queue_rejections_total"), 0)
        self.assertEqual(got["bytes"], sent_bytes)
        # Worker time: what the responses report, passes of both RPCs (6).
        self.assertEqual(v("attnroll_compute_seconds_count", analysis="rollout"), 6)
        self.assertAlmostEqual(got["compute_sum"], sum(compute), delta=1e-6 + 1e-6 * sum(compute))
        self.assertEqual(v("attnroll_compute_seconds_count", analysis="compare"), 1)
        # Every histogram: cumulative buckets ending in +Inf == _count, one per
        # call of its rpc.
        for name in ("attnroll_rpc_duration_seconds", "attnroll_pass_duration_seconds",
                     "attnroll_compute_seconds"):
            series = {}
            for (metric, labels), val in s.items():
                if metric == name + "_bucket":
                    lab = dict(labels)
                    le = lab.pop("le")
                    series.setdefault(frozenset(lab.items()), []).append(
                        (float("inf") if le == "+Inf" else float(le), val))
            self.assertTrue(series, name)
            for lab, buckets in series.items():
                buckets.sort()
                counts = [c for _, c in buckets]
                self.assertEqual(counts, sorted(counts), (name, lab))
                self.assertEqual(buckets[-1][0], float("inf"))
                self.assertEqual(buckets[-1][1], s[(name + "_count", lab)], (name, lab))
        for rpc in ("Explain", "Compare", "ExplainStream", "GetServerInfo"):
            calls = sum(val for k, val in s.items() if k[0] == "attnroll_rpcs_total"
                        and dict(k[1])["rpc"] == rpc)
            self.assertEqual(v("attnroll_rpc_duration_seconds_count", rpc=rpc), calls, rpc)
        self.assertEqual(v("attnroll_pass_duration_seconds_count", rpc="Explain"),
                         v("attnroll_passes_total", rpc="Explain", code="OK")
                         + v("attnroll_passes_total", rpc="Explain", code="INVALID_ARGUMENT")
                         + v("attnroll_passes_total", rpc="Explain", code="RESOURCE_EXHAUSTED"))
        # Gauges, read at scrape time.
        self.assertEqual(v("attnroll_passes_in_flight"), 0)
        self.assertEqual(v("attnroll_admission_waiting"), 0)
        self.assertEqual(v("attnroll_memory_reserved_bytes"), 0)
        self.assertEqual(v("attnroll_memory_budget_bytes"), self.MAX_MEMORY)
        self.assertEqual(v("attnroll_open_connections"), 0)
        for lane in ("step", "long", "new"):
            self.assertEqual(v("attnroll_worker_queue_depth", lane=lane), 0, lane)
        rss = rss_bytes(self.server.pid)
        self.assertLess(abs(v("process_resident_memory_bytes") - rss), 16 * MiB,
                        (v("process_resident_memory_bytes"), rss))
        info = self.cli("info")
        self.assertEqual(info.returncode, 0, info.stderr)
        versions = [dict(k[1])["version"] for k in s if k[0] == "attnroll_build_info"]
        self.assertEqual(len(versions), 1)
        self.assertIn(versions[0], info.stdout)
        self.assertEqual(v("attnroll_build_info", version=versions[0]), 1)
        # promtool's lint of the exposition.
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(lint.returncode, 0, "promtool:\n%s%s" % (lint.stdout, lint.stderr))
        self.assertEqual(lint.stdout + lint.stderr, "")


# --------------------------------------------------------------------------
# 7. The metrics endpoint with idle and slow connections open.
# --------------------------------------------------------------------------


class MetricsEndpointTest(LoadCase):
    IDLE = 4

    def test_scrape_answers_with_idle_and_half_sent_connections_open(self):
        socks = []
        try:
            for _ in range(self.IDLE):
                socks.append(socket.create_connection(("127.0.0.1", self.metrics_port), timeout=5))
            half = socket.create_connection(("127.0.0.1", self.metrics_port), timeout=5)
            half.sendall(b"GET /metr")
            socks.append(half)
            time.sleep(0.2)   # let the server take them (bounded)
            times = []
            for _ in range(3):
                t = time.monotonic()
                body = urllib.request.urlopen(
                    "http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=2).read().decode()
                times.append(time.monotonic() - t)
                self.assertIn("attnroll_build_info", body)
            # Each held connection is still open (the server has not answered them).
            for sock in socks:
                sock.setblocking(False)
                try:
                    self.assertNotEqual(sock.recv(1), b"", "closed too early")
                except BlockingIOError:
                    pass
            report("metrics endpoint", held_connections=len(socks),
                   scrape_ms=[round(t * 1e3, 1) for t in times])
            self.assertLess(max(times), 2.0)
        finally:
            for sock in socks:
                sock.close()
        # And once they are gone.
        self.assertIn("attnroll_build_info", self.scrape_text(timeout=2))

    def test_the_request_timeout_frees_every_thread_idle_connections_hold(self):
        # More idle connections than the endpoint's 8 threads: a scrape waits
        # for the 5 s request timeout to free a thread, no longer, and the
        # server closes the idle connections it timed out.
        socks = [socket.create_connection(("127.0.0.1", self.metrics_port), timeout=5)
                 for _ in range(10)]
        try:
            time.sleep(0.2)
            t = time.monotonic()
            body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                          timeout=10).read().decode()
            waited = time.monotonic() - t
            self.assertIn("attnroll_build_info", body)
            closed = 0
            for sock in socks:
                sock.settimeout(2)
                try:
                    closed += sock.recv(1) == b""
                except (socket.timeout, ConnectionResetError):
                    pass
            report("metrics endpoint, 10 idle", scrape_s=waited, closed_by_server=closed)
            self.assertLess(waited, 7.0)
            self.assertGreaterEqual(closed, 8)
        finally:
            for sock in socks:
                sock.close()


class ExitWhileScrapedTest(unittest.TestCase):
    """SIGTERM with /metrics being scraped as fast as possible, and with
    nobody scraping: exit 0 both ways, promptly (no server of the harness:
    each case starts its own process)."""

    def start(self):
        server = subprocess.Popen(
            [os.path.join(e2e_harness.BIN_DIR, "attnroll-server"), "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0", "--workers", "2"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        self.addCleanup(lambda: server.poll() is None and (server.kill(), server.wait(10)))
        self.addCleanup(server.stdout.close)
        lines = []
        reader = threading.Thread(target=lambda: lines.append(server.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(e2e_harness.SERVER_START_TIMEOUT_S)
        m = re.search(r"metrics=127\.0\.0\.1:(\d+)$", lines[0].strip() if lines else "")
        self.assertIsNotNone(m, lines)
        return server, int(m.group(1))

    def stop(self, server):
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("no exit within 10 s of SIGTERM")
        return rc, time.monotonic() - t0

    def test_exit_zero_while_scraped_and_prompt_when_not(self):
        results = []
        for _ in range(3):
            server, port = self.start()
            stop = threading.Event()
            answered = [0]

            def scrape():
                while not stop.is_set():
                    try:
                        urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                               timeout=2).read()
                        answered[0] += 1
                    except OSError:
                        if server.poll() is not None:
                            return
            threads = [threading.Thread(target=scrape, daemon=True) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.3)  # scrapes under way
            rc, seconds = self.stop(server)
            stop.set()
            for t in threads:
                t.join(timeout=5)
            results.append((rc, round(seconds, 3), answered[0]))
        quiet = []
        for _ in range(2):
            server, _ = self.start()
            quiet.append(self.stop(server))
        report("exit", scraped=results, quiet=[(rc, round(t, 3)) for rc, t in quiet])
        for rc, _, answered in results:
            self.assertEqual(rc, 0, results)
            self.assertGreater(answered, 0, results)
        for rc, seconds in quiet:
            self.assertEqual(rc, 0, quiet)
            self.assertLess(seconds, 1.0, quiet)


# --------------------------------------------------------------------------
# 8. Memory goes back after a burst.
# --------------------------------------------------------------------------


class MemoryAfterBurstTest(LoadCase):
    # The server keeps up to --buffer-cache-bytes of finished passes' large
    # buffers for the next pass of their shape: that much may stay, no more.
    CACHE = 16 * MiB
    server_flags = ("--max-memory-bytes", 4 << 30, "--buffer-cache-bytes", CACHE)
    # What gRPC and the heap still hold 2 s after the burst, beyond the cache
    # (the heap is trimmed after a second idle): 29-82 MiB over idle in ten
    # runs here, 23 MiB with the idle trim (the peak is about 200 MiB over idle).
    SLACK = 96 * MiB

    def test_rss_back_near_idle_after_a_burst_of_large_passes(self):
        pid = self.server.pid
        # One small pass first, so gRPC's and the pool's one-time set-up is in the idle figure.
        self.bench("--shape", "2,2,16", "--requests", 1, "--warmup", 0)
        idle = rss_bytes(pid)
        bench = self.start_bench("--shape", "12,12,512", "--wire", "fp32", "--concurrency", 4,
                                 "--requests", 40, "--warmup", 0)
        peak = idle
        deadline = time.monotonic() + 120
        while bench.poll() is None and time.monotonic() < deadline:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.1)
        d = self.finish_bench(bench, timeout=10)
        self.assertEqual(d["status"], {"OK": 40}, d["status"])
        self.assert_idle()
        time.sleep(3.0)  # the idle trim comes 1 s after the last pass
        after = rss_bytes(pid)
        report("burst", passes=d["passes"], mb_per_s=d["mb_per_second"],
               idle_rss_mib=idle / MiB, peak_rss_mib=peak / MiB, after_rss_mib=after / MiB)
        self.assertGreater(peak, idle + 100 * MiB, "the burst did not use memory: not a test")
        self.assertLessEqual(after, idle + self.CACHE + self.SLACK)


if __name__ == "__main__":
    e2e_harness.main()
