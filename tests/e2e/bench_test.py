#!/usr/bin/python3
"""End-to-end test of `attnroll bench` (the closed-loop load tool) against a
real `attnroll-server`: short runs on small shapes, checked for the
consistency of the numbers the JSON report gives (counts, rates, bytes,
percentiles, status codes), every method and both RPCs, bad usage (exit 2), an
unreachable server (exit 1), and a server whose limits refuse every pass
(RESOURCE_EXHAUSTED counted, not fatal).  No timing is asserted: the machine
is shared and the numbers vary; only their consistency is checked.

Run:
    /usr/bin/python3 tests/e2e/bench_test.py --bin-dir BUILD_DIR [unittest args]
or set ATTNROLL_BIN_DIR.  Uses only the standard library.
"""

import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)

WIRE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}

JSON_KEYS = {
    "server", "server_version", "shape", "wire", "method", "rows", "rpc", "concurrency",
    "channels", "warmup_seconds", "duration_seconds", "requests", "seed",
    "pass_timeout_seconds", "bytes_per_pass", "messages_per_pass", "warmup_passes", "passes",
    "ok_passes", "elapsed_seconds", "passes_per_second", "ok_passes_per_second", "bytes_sent",
    "mb_per_second", "latency_ms", "status", "stopped", "heads_fused_on_client",
    "lb_policy", "attempts", "resent", "peers", "errors",
}


class BenchCase(e2e_harness.ServerTestCase):
    """Helpers shared by the suites below."""

    tmp_prefix = "attnroll_e2e_bench_"
    cli_timeout_s = 60.0

    def bench(self, *args, global_args=()):
        """Runs `attnroll GLOBAL_ARGS bench ARGS --json`, asserts exit 0 and
        one JSON object with every documented key; returns it."""
        res = self.cli(*(list(global_args) + ["bench"] + list(args) + ["--json"]))
        self.assertEqual(res.returncode, 0, "bench failed: %s\nstdout:\n%s\nstderr:\n%s"
                         % (" ".join(str(a) for a in args), res.stdout, res.stderr))
        lines = [l for l in res.stdout.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, "expected one JSON line:\n" + res.stdout)
        d = json.loads(lines[0])
        self.assertEqual(set(d), JSON_KEYS)
        return d

    def check_consistent(self, d):
        """The report's numbers agree with each other."""
        status = d["status"]
        self.assertTrue(all(isinstance(v, int) and v > 0 for v in status.values()), status)
        self.assertEqual(sum(status.values()), d["passes"], status)
        self.assertEqual(status.get("OK", 0), d["ok_passes"], status)
        self.assertGreater(d["passes"], 0)
        # The first failure of every code that failed, no other.
        self.assertEqual(set(d["errors"]), set(status) - {"OK"}, d["errors"])
        for first in d["errors"].values():
            self.assertEqual(set(first), {"message", "at_seconds"}, first)
            self.assertIsInstance(first["message"], str)
            self.assertGreaterEqual(first["at_seconds"], 0)
        elapsed = d["elapsed_seconds"]
        self.assertGreater(elapsed, 0)
        self.assertAlmostEqual(d["passes_per_second"], d["passes"] / elapsed,
                               delta=1e-6 * d["passes_per_second"])
        self.assertAlmostEqual(d["ok_passes_per_second"], d["ok_passes"] / elapsed,
                               delta=1e-6 * max(d["ok_passes_per_second"], 1e-9))
        self.assertAlmostEqual(d["mb_per_second"], d["bytes_sent"] / elapsed / 1e6,
                               delta=1e-6 * max(d["mb_per_second"], 1e-9))
        # The pass's wire bytes: attention (and gradient) of every layer.
        b, l, h, n = d["shape"]
        if d["heads_fused_on_client"]:
            h = 1
        per_pass = b * l * h * n * n * WIRE_BYTES[d["wire"]]
        if d["method"] == "grad-rollout":
            per_pass *= 2
        self.assertEqual(d["bytes_per_pass"], per_pass)
        # One server by HOST:PORT: pick_first, no retries, nothing re-sent;
        # over Explain every pass is counted under that server's peer name.
        self.assertEqual((d["lb_policy"], d["attempts"], d["resent"]), ("pick_first", 1, 0))
        if d["rpc"] in ("explain", "arrays"):
            self.assertEqual(d["peers"], {"ipv4:127.0.0.1:%d" % self.port: status}, d["peers"])
        else:
            self.assertEqual(d["peers"], {})
        if d["ok_passes"] == d["passes"]:
            # Every pass went out whole.
            self.assertEqual(d["bytes_sent"], d["passes"] * per_pass)
            expected_mb = d["passes"] * per_pass / elapsed / 1e6
            self.assertLess(abs(d["mb_per_second"] - expected_mb), 0.03 * expected_mb)
        else:
            self.assertLessEqual(d["bytes_sent"], d["passes"] * per_pass)
        lat = d["latency_ms"]
        if d["ok_passes"] > 0:
            self.assertGreater(lat["p50"], 0)
            self.assertLessEqual(lat["p50"], lat["p90"])
            self.assertLessEqual(lat["p90"], lat["p99"])
            self.assertLessEqual(lat["p99"], lat["max"])
            self.assertLessEqual(lat["mean"], lat["max"])
            self.assertGreater(lat["mean"], 0)
            # No pass outlasts the measured phase.
            self.assertLessEqual(lat["max"], elapsed * 1e3 * 1.0001)
        else:
            self.assertEqual(lat, {"p50": None, "p90": None, "p99": None, "max": None,
                                   "mean": None})
        self.assertEqual(d["server"], "127.0.0.1:%d" % self.port)
        self.assertTrue(d["server_version"])
        self.assertIsNone(self.server.poll(), "server died; stderr:\n" + self._server_stderr())


class BenchTest(BenchCase):
    """A server with the default limits."""

    def test_requests_are_counted_exactly(self):
        d = self.bench("--shape", "2,2,16", "--requests", 50, "--concurrency", 3,
                       "--warmup", 0.2)
        self.check_consistent(d)
        self.assertEqual(d["passes"], 50)
        self.assertEqual(d["ok_passes"], 50)
        self.assertEqual(d["status"], {"OK": 50})
        self.assertEqual(d["stopped"], "requests")
        self.assertEqual(d["requests"], 50)
        self.assertIsNone(d["duration_seconds"])
        self.assertEqual((d["shape"], d["wire"], d["method"], d["rows"], d["rpc"]),
                         ([1, 2, 2, 16], "fp32", "rollout", [0], "explain"))
        self.assertEqual((d["concurrency"], d["channels"]), (3, 3))
        self.assertEqual(d["messages_per_pass"], 1 + 2)  # header + one message per layer
        self.assertGreater(d["warmup_passes"], 0)
        self.assertEqual(d["pass_timeout_seconds"], 600)

    def test_duration_runs_at_least_the_duration(self):
        d = self.bench("--shape", "4,3,32", "--batch", 2, "--wire", "fp16", "--duration", 1.5,
                       "--concurrency", 2, "--channels", 1, "--rpc", "stream", "--warmup", 0.3,
                       global_args=("--timeout", 100))
        self.check_consistent(d)
        self.assertEqual(d["status"], {"OK": d["passes"]})
        self.assertEqual(d["stopped"], "duration")
        self.assertIsNone(d["requests"])
        self.assertEqual(d["duration_seconds"], 1.5)
        # Every thread runs until the end and finishes its last pass after it.
        self.assertGreaterEqual(d["elapsed_seconds"], 1.5)
        self.assertEqual(d["shape"], [2, 4, 3, 32])
        self.assertEqual((d["concurrency"], d["channels"]), (2, 1))
        # min(--timeout, duration + 30 s)
        self.assertEqual(d["pass_timeout_seconds"], 31.5)

    def test_every_method_over_both_rpcs(self):
        for method in ("rollout", "grad-rollout", "flow", "null"):
            for rpc in ("explain", "stream", "arrays"):
                for wire in ("fp32", "bf16"):
                    with self.subTest(method=method, rpc=rpc, wire=wire):
                        d = self.bench("--shape", "3,2,12", "--requests", 12, "--method", method,
                                       "--rpc", rpc, "--wire", wire, "--concurrency", 2,
                                       "--warmup", 0)
                        self.check_consistent(d)
                        self.assertEqual(d["status"], {"OK": 12})
                        self.assertEqual(d["warmup_passes"], 0)
                        self.assertEqual(d["method"], method)
                        self.assertEqual(d["rows"], [] if method == "null" else [0])

    def test_rows_and_message_split(self):
        # 4 heads of 24 x 24 fp32 per layer, at most about one head per message.
        d = self.bench("--shape", "2,4,24", "--rows", "0,5,23", "--max-message-bytes",
                       1024 + 24 * 24 * 4, "--requests", 5, "--warmup", 0)
        self.check_consistent(d)
        self.assertEqual(d["rows"], [0, 5, 23])
        self.assertEqual(d["messages_per_pass"], 1 + 2 * 4)
        self.assertEqual(d["status"], {"OK": 5})

    def test_client_fusion_sends_one_head_per_layer(self):
        # Off by default: every head. On: one fused head per layer, where the
        # method allows it (not grad-rollout: its rule weights each head).
        for method, fusion, heads_sent in (("rollout", "off", 4), ("rollout", "on", 1),
                                           ("null", "on", 1), ("grad-rollout", "auto", 4)):
            with self.subTest(method=method, fusion=fusion):
                d = self.bench("--shape", "2,4,24", "--method", method, "--client-fusion", fusion,
                               "--requests", 3, "--warmup", 0)
                self.check_consistent(d)
                self.assertEqual(d["status"], {"OK": 3})
                self.assertEqual(d["heads_fused_on_client"], heads_sent == 1)
                grad = 2 if method == "grad-rollout" else 1
                self.assertEqual(d["bytes_per_pass"], grad * 2 * heads_sent * 24 * 24 * 4)

    def test_arrays_fuse_and_encode_inside_each_call(self):
        # --rpc arrays: Client::Explain from the arrays on every pass, fusing
        # and encoding inside the call: it sends one fused head per layer with
        # fusion, every head without, at the wire's width, on a batch of 2.
        # Fused layers go together: the header and one LayerBatch of both
        # (3.2 KB each); every head: the header and one message per layer
        # (the prepared pass of the same fused options sends 3).
        for fusion, wire, heads_sent, messages in (("auto", "fp32", 1, 2), ("off", "fp32", 3, 3),
                                                   ("auto", "fp16", 1, 2)):
            with self.subTest(fusion=fusion, wire=wire):
                d = self.bench("--shape", "2,3,20", "--batch", 2, "--rpc", "arrays",
                               "--client-fusion", fusion, "--wire", wire, "--requests", 4,
                               "--concurrency", 2, "--warmup", 0)
                self.check_consistent(d)
                self.assertEqual(d["status"], {"OK": 4})
                self.assertEqual(d["rpc"], "arrays")
                self.assertEqual(d["heads_fused_on_client"], heads_sent == 1)
                self.assertEqual(d["bytes_sent"],
                                 4 * 2 * 2 * heads_sent * 20 * 20 * WIRE_BYTES[wire])
                self.assertEqual(d["messages_per_pass"], messages)

    def test_null_and_rollout_both_run_on_a_bigger_shape(self):
        # Only that both ran and reported sane numbers: no timing is compared.
        for method in ("rollout", "null"):
            with self.subTest(method=method):
                d = self.bench("--shape", "12,12,64", "--wire", "fp16", "--method", method,
                               "--duration", 1, "--concurrency", 2, "--warmup", 0.2)
                self.check_consistent(d)
                self.assertEqual(d["status"], {"OK": d["passes"]})
                self.assertGreater(d["mb_per_second"], 0)

    def test_text_report(self):
        res = self.cli("bench", "--shape", "2,2,16", "--requests", 20, "--warmup", 0,
                       "--concurrency", 2)
        self.assertEqual(res.returncode, 0, res.stderr)
        out = res.stdout
        for needle in ("server ", "config ", "shape B=1 L=2 H=2 n=16", "fp32 wire",
                       "method rollout", "rpc explain", "concurrency 2 over 2 channels",
                       "passes   20 in", "passes/s", "MB/s", "p50", "p90", "p99", "max",
                       "status   OK 20"):
            self.assertIn(needle, out)

    def test_help(self):
        res = self.cli("bench", "--help")
        self.assertEqual(res.returncode, 0)
        for key in JSON_KEYS:
            self.assertIn(key, res.stdout)

    def test_bad_usage_exits_2_with_a_message(self):
        cases = [
            ([], "--shape L,H,n is required"),
            (["--shape", "2,2"], "--shape"),
            (["--shape", "2,0,16"], "--shape"),
            (["--shape", "2,2,x"], "--shape"),
            (["--shape", "2,2,16", "--concurrency", 0], "--concurrency"),
            (["--shape", "2,2,16", "--concurrency", "two"], "--concurrency"),
            (["--shape", "2,2,16", "--channels", 3], "--channels"),
            (["--shape", "2,2,16", "--batch", 0], "--batch"),
            (["--shape", "2,2,16", "--client-fusion", "yes"], "--client-fusion: expected auto|off|on"),
            (["--shape", "2,2,16", "--method", "grad-rollout", "--client-fusion", "on"],
             "--client-fusion on: grad-rollout needs every head"),
            (["--shape", "2,2,16", "--duration", 0], "--duration"),
            (["--shape", "2,2,16", "--duration", 3601], "--duration"),
            (["--shape", "2,2,16", "--requests", 0], "--requests"),
            (["--shape", "2,2,16", "--requests", 10000001], "--requests"),
            (["--shape", "2,2,16", "--requests", 5, "--duration", 1], "exclusive"),
            (["--shape", "2,2,16", "--warmup", -1], "--warmup"),
            (["--shape", "2,2,16", "--wire", "fp8"], "--wire"),
            (["--shape", "2,2,16", "--method", "magic"], "--method"),
            (["--shape", "2,2,16", "--rpc", "unary"], "--rpc: expected explain|stream|arrays"),
            # 2.25 GiB of fp16 wire and one fp32 layer fit; the 4 GiB of fp32
            # arrays on top do not.
            (["--shape", "16,16,2048", "--wire", "fp16", "--rpc", "arrays"],
             "6.25 GiB of client memory (its wire bytes and one fp32 layer, and every fp32 "
             "layer for --rpc arrays)"),
            (["--shape", "2,2,16", "--rows", 16], "--rows"),
            (["--shape", "2,2,16", "--method", "null", "--rows", 1], "--rows"),
            (["--shape", "2,2,16", "--seed", -3], "--seed"),
            (["--shape", "100,100,2000"], "4 GiB"),
            (["--shape", "2,2,16", "--bogus"], "--bogus"),
            (["--shape", "2,2,16", "--requests"], "needs a value"),
        ]
        for args, mention in cases:
            with self.subTest(args=args):
                res = self.cli("bench", *args)
                self.assertEqual(res.returncode, 2, "stdout:\n%s\nstderr:\n%s"
                                 % (res.stdout, res.stderr))
                self.assertIn("attnroll bench:", res.stderr)
                self.assertIn(mention, res.stderr)
                self.assertEqual(res.stdout, "")

    def test_unreachable_server_exits_1(self):
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        res = self.cli("bench", "--shape", "2,2,16", "--requests", 3,
                       server="127.0.0.1:%d" % port)
        self.assertEqual(res.returncode, 1, res.stderr)
        self.assertIn("cannot reach the server", res.stderr)
        self.assertIn("UNAVAILABLE", res.stderr)


class TinyLimitBenchTest(BenchCase):
    """A server that refuses passes of more than 8 tokens: the refusals are
    counted as RESOURCE_EXHAUSTED, the run completes."""

    server_flags = ("--max-tokens", "8")

    def test_refused_passes_are_counted(self):
        for rpc in ("explain", "stream", "arrays"):
            with self.subTest(rpc=rpc):
                d = self.bench("--shape", "2,2,16", "--requests", 20, "--concurrency", 2,
                               "--rpc", rpc, "--warmup", 0)
                self.check_consistent(d)
                self.assertEqual(d["status"], {"RESOURCE_EXHAUSTED": 20})
                # The first refusal's message, as the server wrote it: the field.
                self.assertIn("layout.num_tokens", d["errors"]["RESOURCE_EXHAUSTED"]["message"])
                self.assertEqual(d["ok_passes"], 0)
                self.assertEqual(d["ok_passes_per_second"], 0)

    def test_refused_passes_over_a_duration(self):
        d = self.bench("--shape", "1,1,9", "--duration", 0.5, "--rpc", "stream", "--warmup", 0)
        self.check_consistent(d)
        self.assertEqual(set(d["status"]), {"RESOURCE_EXHAUSTED"})

    def test_passes_within_the_limit_succeed(self):
        d = self.bench("--shape", "2,2,8", "--requests", 10, "--warmup", 0)
        self.check_consistent(d)
        self.assertEqual(d["status"], {"OK": 10})


if __name__ == "__main__":
    e2e_harness.main()
