#!/usr/bin/python3
"""End-to-end test of the attnroll-server process as an operator sees it:
--help and bad flags, settings from the environment, the standard health
service (and `attnroll health`, the containers' probe), reflection, the
Prometheus endpoint, the CLI's error reporting, and a graceful exit 0 on SIGTERM.

Run: /usr/bin/python3 tests/e2e/server_process_test.py --bin-dir BUILD_DIR
Needs Debian's python3-grpcio, python3-protobuf, python3-numpy and protoc
(health/reflection messages are generated from /usr/share/grpc-proto).
"""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request

import grpc
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)

GRPC_PROTO = "/usr/share/grpc-proto"

TMP = tempfile.mkdtemp(prefix="attnroll_proc_")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
# Generated as top-level modules: a grpc/ package here would shadow grpcio's.
for sub, name in (("grpc/health/v1", "health.proto"), ("grpc/reflection/v1alpha", "reflection.proto")):
    subprocess.run(["protoc", "-I", os.path.join(GRPC_PROTO, sub), "--python_out", TMP, name],
                   check=True)
sys.path.insert(0, TMP)
import health_pb2  # noqa: E402
import reflection_pb2  # noqa: E402


class ServerProcessTest(e2e_harness.ServerTestCase):
    # The harness serves metrics on 127.0.0.1:0 and sets metrics_port.
    tmp_prefix = "attnroll_proc_"
    cli_timeout_s = 60.0

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cls.port)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        super().tearDownClass()

    def test_help_and_bad_flags(self):
        for binary in (self.server_bin, self.cli_bin):
            res = subprocess.run([binary, "--help"],
                                 capture_output=True, text=True, timeout=10)
            self.assertEqual(res.returncode, 0, binary)
            self.assertIn("Usage", res.stdout)
        res = subprocess.run([self.server_bin, "--no-such-flag", "1"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(res.returncode, 2)
        self.assertIn("unknown flag --no-such-flag", res.stderr)
        # Out of range values stop the server before it listens: exit 2, the flag, the
        # range and the value on stderr, nothing on stdout (no "listening" line).
        for args, message in (
                (["--max-tokens=4294967297"],
                 "attnroll-server: --max-tokens: expected an integer in [1, 65536], "
                 "got 4294967297"),
                (["--listen", "127.0.0.1:0", "--client-share", "1.5"],
                 "attnroll-server: --client-share: expected a number in (0, 1], got 1.5")):
            res = subprocess.run([self.server_bin] + args,
                                 capture_output=True, text=True, timeout=10)
            self.assertEqual(res.returncode, 2, args)
            self.assertEqual(res.stderr.strip(), message, args)
            self.assertEqual(res.stdout, "", args)
        res = self.cli("explain", "--help")
        self.assertEqual(res.returncode, 0)
        for flag in ("--fusion", "--head-weights", "--residual", "--no-renorm", "--layers",
                     "--per-layer", "--rows", "--prefix", "--grid", "--scale", "--wire", "--json"):
            self.assertIn(flag, res.stdout)

    def test_health_serving(self):
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        for service in ("", "attnroll.v1.AttnrollService"):
            resp = check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING, service)
        with self.assertRaises(grpc.RpcError) as err:
            check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        self.assertEqual(err.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_command(self):
        for extra in ([], ["--service", "attnroll.v1.AttnrollService"]):
            res = self.cli("--timeout", "5", "health", *extra)
            self.assertEqual((res.returncode, res.stdout, res.stderr), (0, "SERVING\n", ""), extra)
        res = self.cli("--timeout", "5", "health", "--service", "no.such.Service")
        self.assertEqual(res.returncode, 1)
        self.assertIn("attnroll: NOT_FOUND:", res.stderr)
        self.assertEqual(res.stdout, "")
        # Nothing listening: a free port, closed again.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        res = self.cli("--timeout", "5", "health", server="127.0.0.1:%d" % closed)
        self.assertEqual(res.returncode, 1)
        self.assertIn("attnroll: UNAVAILABLE:", res.stderr)
        res = self.cli("health", "--no-such-option")
        self.assertEqual(res.returncode, 2)
        self.assertIn("attnroll health:", res.stderr)
        res = self.cli("health", "--help")
        self.assertEqual(res.returncode, 0)
        self.assertIn("Exit 0 when it is SERVING", res.stdout)

    def _run_server_env(self, env, args=()):
        """Starts attnroll-server with only `env` (plus PATH) in its
        environment; returns (process, grpc_address, metrics) from its first line."""
        proc = subprocess.Popen([self.server_bin] + list(args), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin")))
        line = proc.stdout.readline().strip()
        m = re.match(r"attnroll-server listening grpc=(127\.0\.0\.1:\d+) metrics=(\S+)$", line)
        if m is None:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            self.fail("no listening line: %r; stderr:\n%s" % (line, err))
        return proc, m.group(1), m.group(2)

    def _stop(self, proc):
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, err)
        return err

    def test_settings_from_the_environment(self):
        # A bad value stops the server naming the variable and its flag.
        res = subprocess.run([self.server_bin], capture_output=True, text=True, timeout=10,
                             env={"ATTNROLL_MAX_TOKENS": "4294967297"})
        self.assertEqual(res.returncode, 2)
        self.assertEqual(res.stderr.strip(),
                         "attnroll-server: ATTNROLL_MAX_TOKENS (--max-tokens): expected an integer "
                         "in [1, 65536], got 4294967297")
        self.assertEqual(res.stdout, "")
        # Every setting from the environment, none on the command line; an
        # unknown ATTNROLL_ variable is logged and ignored.
        env = {"ATTNROLL_LISTEN": "127.0.0.1:0", "ATTNROLL_METRICS_LISTEN": "none",
               "ATTNROLL_WORKERS": "1", "ATTNROLL_MAX_TOKENS": "8", "ATTNROLL_MAX_TOKEN": "9"}
        proc, address, metrics = self._run_server_env(env)
        try:
            self.assertEqual(metrics, "none")
            info = self.cli("info", server=address)
            self.assertEqual(info.returncode, 0, info.stderr)
            self.assertIn("tokens 8,", info.stdout)
            self.assertIn("workers:  1 ", info.stdout)
        finally:
            err = self._stop(proc)
        self.assertRegex(err, r"WARNING environment variable ATTNROLL_MAX_TOKEN names no server "
                              r"flag; ignored")
        # A flag wins over its variable.
        proc, address, _ = self._run_server_env(env, ["--max-tokens", "12"])
        try:
            info = self.cli("info", server=address)
            self.assertIn("tokens 12,", info.stdout)
        finally:
            self._stop(proc)

    def test_reflection_lists_and_describes_the_service(self):
        info = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="attnroll.v1.AttnrollService")]
        responses = list(info(iter(reqs), timeout=10))
        names = [s.name for s in responses[0].list_services_response.service]
        self.assertIn("attnroll.v1.AttnrollService", names)
        files = responses[1].file_descriptor_response.file_descriptor_proto
        self.assertTrue(any(b"ExplainStream" in f for f in files))

    def test_metrics_count_passes_by_code(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "good.npy")
            np.save(good, nr.uniform_attention(2, 2, 5))
            bad = os.path.join(d, "bad.npy")
            att = nr.uniform_attention(2, 2, 5)
            att[1, 0, 2, 2] = -1.0
            np.save(bad, att)
            out = os.path.join(d, "out.npy")
            self.assertEqual(self.cli("explain", "--attention", good, "--out", out).returncode, 0)
            # Every head sent, so the server (not the client's fusion) refuses it.
            res = self.cli("explain", "--attention", bad, "--out", out, "--client-fusion", "off")
            self.assertEqual(res.returncode, 1)
            self.assertIn("INVALID_ARGUMENT", res.stderr)
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=10).read().decode()
        self.assertRegex(body, r'attnroll_passes_total\{code="OK",rpc="Explain"\} 1\b')
        self.assertRegex(body, r'attnroll_passes_total\{code="INVALID_ARGUMENT",rpc="Explain"\} 1\b')
        self.assertRegex(body, r'attnroll_pass_duration_seconds_count\{rpc="Explain"\} 2\b')
        self.assertRegex(body, r"attnroll_passes_in_flight 0\b")
        self.assertRegex(body, r"attnroll_memory_reserved_bytes 0\b")
        # The limits the gauges run up against (the defaults: alerts divide by them).
        self.assertRegex(body, r"(?m)^attnroll_passes_in_flight_limit 64$")
        self.assertRegex(body, r"(?m)^attnroll_worker_queue_capacity 256$")
        self.assertRegex(body, r"(?m)^attnroll_memory_budget_bytes 4294967296$")
        # The good pass went fused (2 layers of one 5 x 5 fp32 head), the bad one
        # whole (2 layers of 2 heads; it fails on its last).
        m = re.search(r"^attnroll_attention_received_bytes_total (\S+)$", body, re.M)
        self.assertIsNotNone(m, body)
        self.assertEqual(float(m.group(1)), 2 * (5 * 5 * 4) + 2 * (2 * 5 * 5 * 4))

    def test_cli_reports_unavailable_server(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "a.npy")
            np.save(path, nr.uniform_attention(1, 1, 3))
            # Port 1 on loopback: nothing listens there.
            res = self.cli("--timeout", "3", "explain", "--attention", path, "--out",
                           os.path.join(d, "o.npy"), server="127.0.0.1:1")
            self.assertEqual(res.returncode, 1)
            self.assertIn("UNAVAILABLE", res.stderr)

    def test_every_thread_blocks_or_forwards_the_stop_signals(self):
        # A thread that neither blocks nor catches SIGTERM (OpenBLAS's pool
        # starts before main) would let the kernel kill the process with it:
        # every thread must block SIGINT, SIGTERM and SIGHUP or catch them.
        wanted = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
        for _ in range(3):
            proc, _, _ = self._run_server_env({}, ["--listen", "127.0.0.1:0",
                                                   "--metrics-listen", "none"])
            self.addCleanup(lambda p=proc: p.poll() is None and (p.kill(), p.communicate()))
            tasks = os.listdir("/proc/%d/task" % proc.pid)
            self.assertGreater(len(tasks), 2)
            for tid in tasks:
                try:
                    with open("/proc/%d/task/%s/status" % (proc.pid, tid)) as f:
                        fields = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
                except FileNotFoundError:  # a thread that ended meanwhile
                    continue
                covered = int(fields["SigBlk"].strip(), 16) | int(fields["SigCgt"].strip(), 16)
                self.assertEqual(covered & wanted, wanted, (tid, fields["Name"].strip()))
            # And a SIGTERM at once after the listening line still exits 0.
            self._stop(proc)

    def test_zz_sigterm_exits_zero(self):
        # Runs last (alphabetical order): the server drains and exits 0, and
        # tearDownClass finds it gone.
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait(timeout=20), 0)
        log = self._server_stderr()
        # One line per event: "TIME LEVEL event: key=value ...", the time in UTC with ms.
        for pattern in (r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO attnroll-server started: "
                        r"version=\S+ listen=127\.0\.0\.1:%d metrics=127\.0\.0\.1:%d workers=2 "
                        % (self.port, self.metrics_port),
                        r"^\S+Z INFO shutting down: signal=SIGTERM grace_seconds=10$",
                        r"^\S+Z INFO stopped$"):
            self.assertRegex(log, re.compile(pattern, re.MULTILINE))


if __name__ == "__main__":
    e2e_harness.main()
