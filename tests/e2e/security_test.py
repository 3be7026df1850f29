#!/usr/bin/python3
"""End-to-end test of TLS, mutual TLS and bearer tokens on a real
attnroll-server process, with certificates made at test time by
tests/testutil/make_test_certs.sh (the openssl command):

- bad flag combinations and bad files stop the server with exit 2 naming the
  flag (and the line of a token file, never its token); the CLI's own;
- every CLI command (info, explain, compare, explain-pair, audit, bench)
  works over mutual TLS with a token, and its results match numpy/scipy;
- without a token, with a wrong one, without a client certificate or the CA,
  the CLI fails with the status and a message that never holds the token;
- health answers without a token, GetServerInfo and reflection do not
  (--info-requires-auth);
- /metrics over HTTPS with client certificates verified (Python's ssl), its
  client labels bounded to token names;
- SIGHUP re-reads the token file and the metrics port's certificate.

Run: /usr/bin/python3 tests/e2e/security_test.py --bin-dir BUILD_DIR
"""

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import http.client

import grpc
import numpy as np
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CERTS = os.path.join(HERE, "..", "testutil", "make_test_certs.sh")
GRPC_PROTO = "/usr/share/grpc-proto"

TMP = tempfile.mkdtemp(prefix="attnroll_sec_")
CERTS = os.path.join(TMP, "certs")
subprocess.run([MAKE_CERTS, CERTS], check=True, stdout=subprocess.DEVNULL)
for sub, name in (("grpc/health/v1", "health.proto"), ("grpc/reflection/v1alpha", "reflection.proto")):
    subprocess.run(["protoc", "-I", os.path.join(GRPC_PROTO, sub), "--python_out", TMP, name],
                   check=True)
sys.path.insert(0, TMP)
import health_pb2  # noqa: E402
import reflection_pb2  # noqa: E402

ALICE = "alice-4d2f8b6e1a9c3057"
BOB = "bob-e5a1c7093f6b2d48"
CAROL = "carol-83b6d0f2a4c9e715"
TOKENS = os.path.join(TMP, "tokens")
MISSING = ('UNAUTHENTICATED: authentication: metadata "authorization": missing: expected '
           '"Bearer <token>" with a token of the server\'s token file')
NOT_VALID = ('UNAUTHENTICATED: authentication: metadata "authorization": the bearer token is not '
             "one of the server's tokens")


def cert(name):
    return os.path.join(CERTS, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)


write(TOKENS, "# the e2e test's tokens\nalice %s\nbob %s\n" % (ALICE, BOB))
# The metrics port's files live on their own, so a rotation can replace them.
METRICS_CERT = os.path.join(TMP, "metrics.pem")
METRICS_KEY = os.path.join(TMP, "metrics.key")
shutil.copy(cert("server.pem"), METRICS_CERT)
shutil.copy(cert("server.key"), METRICS_KEY)


class BadConfigurationTest(unittest.TestCase):
    """Nothing listens: every case exits 2 before the server starts."""

    def server(self, *args):
        return subprocess.run([os.path.join(e2e_harness.BIN_DIR, "attnroll-server"),
                               "--listen", "127.0.0.1:0", "--metrics-listen", "none"]
                              + list(args), capture_output=True, text=True, timeout=20)

    def test_bad_flag_combinations_and_files_exit_2_naming_the_flag(self):
        bad_tokens = os.path.join(TMP, "bad_tokens")
        write(bad_tokens, "alice %s\nbob\n" % ALICE)
        cases = [
            (["--tls-cert", cert("server.pem")],
             "--tls-cert needs --tls-key (the certificate's private key)"),
            (["--tls-client-ca", cert("ca.pem")],
             "--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked "
             "in the TLS handshake)"),
            (["--info-requires-auth"],
             "--info-requires-auth needs --token-file or --tls-client-ca (else no caller could "
             "authenticate)"),
            (["--listen", "0.0.0.0:0", "--token-file", TOKENS],
             "--token-file: tokens would cross the network in clear text on 0.0.0.0:0; add "
             "--tls-cert and --tls-key, or listen on loopback only"),
            (["--metrics-tls-cert", cert("server.pem"), "--metrics-tls-key", cert("server.key")],
             "--metrics-tls-cert: the metrics endpoint is off (--metrics-listen none)"),
            (["--tls-reload-seconds", "0"],
             "--tls-reload-seconds: expected an integer in [1, 86400], got 0"),
            (["--tls-cert", cert("server.pem"), "--tls-key", cert("server2.key")],
             "--tls-key %s: not the private key of the certificate in --tls-cert %s"
             % (cert("server2.key"), cert("server.pem"))),
            (["--tls-cert", cert("nowhere.pem"), "--tls-key", cert("server.key")],
             "--tls-cert %s: cannot read: No such file or directory" % cert("nowhere.pem")),
            (["--token-file", bad_tokens],
             '--token-file %s: line 2: expected "NAME TOKEN", got 1 field' % bad_tokens),
        ]
        for args, message in cases:
            res = self.server(*args)
            self.assertEqual(res.returncode, 2, (args, res.stderr))
            self.assertEqual(res.stderr.strip(), "attnroll-server: " + message, args)
            self.assertEqual(res.stdout, "", args)
            self.assertNotIn(ALICE, res.stderr)

    def test_the_cli_checks_its_own_flags(self):
        cli = os.path.join(e2e_harness.BIN_DIR, "attnroll")
        two_words = os.path.join(TMP, "two_words")
        write(two_words, "alice %s\n" % ALICE)
        for args, message in (
                (["--tls-cert", cert("alice.pem")],
                 "attnroll: --tls-cert needs --tls-key (the certificate's private key)"),
                (["--tls-ca", cert("nowhere.pem")],
                 "attnroll: --tls-ca %s: cannot read: No such file or directory" % cert("nowhere.pem")),
                (["--tls-server-name", "localhost"],
                 "attnroll: --tls-server-name needs TLS (--tls-ca, or --tls-cert and --tls-key)"),
                (["--token-file", two_words],
                 "attnroll: --token-file %s: expected one token, got 2 words" % two_words)):
            res = subprocess.run([cli] + args + ["info"], capture_output=True, text=True, timeout=20)
            self.assertEqual(res.returncode, 2, args)
            self.assertEqual(res.stderr.strip(), message)
            self.assertNotIn(ALICE, res.stderr)


class SecureServerTest(e2e_harness.ServerTestCase):
    """Mutual TLS on both ports, tokens, info for authenticated callers only."""
    tmp_prefix = "attnroll_sec_server_"
    cli_timeout_s = 60.0
    server_flags = ("--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                    "--tls-client-ca", cert("ca.pem"), "--token-file", TOKENS,
                    "--info-requires-auth",
                    "--metrics-tls-cert", METRICS_CERT, "--metrics-tls-key", METRICS_KEY,
                    "--metrics-tls-client-ca", cert("ca.pem"))

    TLS = ("--tls-ca", cert("ca.pem"), "--tls-cert", cert("alice.pem"), "--tls-key", cert("alice.key"))

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice_token = os.path.join(TMP, "alice.token")
        write(cls.alice_token, ALICE + "\n")

    def secure(self, *args, token_file=None, env_token=None, tls=None):
        """The CLI over mutual TLS as alice's certificate, with Alice's token
        unless told otherwise."""
        cmd = [self.cli_bin, "--server", "127.0.0.1:%d" % self.port]
        cmd += list(self.TLS if tls is None else tls)
        if token_file is None and env_token is None:
            token_file = self.alice_token
        if token_file:
            cmd += ["--token-file", token_file]
        env = dict(os.environ)
        env.pop("ATTNROLL_TOKEN", None)
        if env_token is not None:
            env["ATTNROLL_TOKEN"] = env_token
        return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                              timeout=self.cli_timeout_s, env=env, stdin=subprocess.DEVNULL)

    def _server_log(self):
        # All of it (the harness's _server_stderr is the tail, for messages).
        self.server_log.flush()
        with open(self.server_log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def ok(self, *args, **kw):
        res = self.secure(*args, **kw)
        self.assertEqual(res.returncode, 0, "%s\nstdout:\n%s\nstderr:\n%s" % (args, res.stdout, res.stderr))
        return res

    def channel(self, client_cert=True):
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(cert("ca.pem")),
            private_key=read(cert("alice.key")) if client_cert else None,
            certificate_chain=read(cert("alice.pem")) if client_cert else None)
        return grpc.secure_channel("127.0.0.1:%d" % self.port, creds)

    def scrape(self, ca="ca.pem", client=("alice.pem", "alice.key")):
        ctx = ssl.create_default_context(cafile=cert(ca))
        if client is not None:
            ctx.load_cert_chain(cert(client[0]), cert(client[1]))
        url = "https://127.0.0.1:%d/metrics" % self.metrics_port
        return urllib.request.urlopen(url, context=ctx, timeout=10).read().decode()

    # -- the CLI ------------------------------------------------------------

    def test_every_command_works_over_mutual_tls_with_a_token(self):
        rng = np.random.default_rng(7)
        att = nr.make_attention(rng, 3, 2, 10).astype(np.float32)
        cand = nr.make_attention(rng, 3, 2, 10).astype(np.float32)
        a = self._write("att", att)
        b = self._write("cand", cand)
        out = os.path.join(self.tmp, "map.npy")
        # info
        res = self.ok("info")
        self.assertIn("tokens 8192", res.stdout)
        # explain: the numpy reference's map
        self.ok("explain", "--attention", a, "--out", out)
        np.testing.assert_allclose(np.load(out), nr.rollout_maps(att.astype(np.float64)),
                                   rtol=1e-5, atol=1e-6)
        # compare: against scipy
        ma, mb = nr.rollout_maps(att.astype(np.float64))[0], nr.rollout_maps(cand.astype(np.float64))[0]
        pa, pb = self._write("ma", ma.astype(np.float32)), self._write("mb", mb.astype(np.float32))
        got = json.loads(self.ok("compare", "--a", pa, "--b", pb, "--json").stdout)["comparisons"][0]
        self.assertAlmostEqual(got["pearson"], scipy.stats.pearsonr(ma.astype(np.float32),
                                                                   mb.astype(np.float32))[0], places=5)
        # explain-pair: both maps
        ob, oc = os.path.join(self.tmp, "pb.npy"), os.path.join(self.tmp, "pc.npy")
        self.ok("explain-pair", "--baseline", a, "--candidate", b, "--out-baseline", ob,
                "--out-candidate", oc)
        np.testing.assert_allclose(np.load(ob), nr.rollout_maps(att.astype(np.float64)), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.load(oc), nr.rollout_maps(cand.astype(np.float64)), rtol=1e-5, atol=1e-6)
        # audit: identical models, no drift
        base, same = os.path.join(self.tmp, "base"), os.path.join(self.tmp, "same")
        for d in (base, same):
            os.makedirs(d, exist_ok=True)
            for i in range(3):
                np.save(os.path.join(d, "item%d.npy" % i),
                        nr.make_attention(np.random.default_rng(i), 2, 2, 8).astype(np.float32))
        report = os.path.join(self.tmp, "report.json")
        res = self.ok("audit", "--baseline", base, "--candidate", same, "--report", report)
        self.assertIn("audited 3 items (0 refused): 0 drifted", res.stdout)
        with open(report) as f:
            overall = json.load(f)["overall"]
        self.assertEqual(int(overall["items"]), 3)
        metrics = {m["metric"]: m for m in overall["metrics"]}
        self.assertAlmostEqual(metrics["spearman"]["median"], 1.0, places=6)
        self.assertAlmostEqual(metrics["l1"].get("max", 0.0), 0.0, places=6)  # 0: left out of JSON
        # bench: every pass OK
        d = json.loads(self.ok("bench", "--shape", "2,2,8", "--requests", 4, "--warmup", 0,
                               "--json").stdout)
        self.assertEqual(d["status"], {"OK": 4})
        # The token from the environment works the same.
        self.ok("info", env_token=BOB)

    def test_without_a_token_a_certificate_or_the_ca_the_cli_fails_with_the_status(self):
        path = self._write("small", nr.uniform_attention(2, 2, 4).astype(np.float32))
        out = os.path.join(self.tmp, "o.npy")
        res = self.secure("explain", "--attention", path, "--out", out, token_file="")
        self.assertEqual(res.returncode, 1)
        self.assertEqual(res.stderr.strip(), "attnroll: " + MISSING)
        guess = "alice-4d2f8b6e1a9c3058"
        res = self.secure("explain", "--attention", path, "--out", out, env_token=guess)
        self.assertEqual(res.returncode, 1)
        self.assertEqual(res.stderr.strip(), "attnroll: " + NOT_VALID)
        self.assertNotIn(guess, res.stderr)
        res = self.secure("info", token_file="")
        self.assertEqual(res.stderr.strip(), "attnroll: " + MISSING)
        # The monitoring commands connect the same way: over mutual TLS they
        # reach the server, refused without a token and past the check with one.
        for cmd in (["monitor", "--once", "--json"], ["baseline", "list", "--json"]):
            res = self.secure(*cmd, token_file="")
            self.assertEqual((res.returncode, res.stderr.strip()), (1, "attnroll: " + MISSING), cmd)
            res = self.secure(*cmd)
            self.assertNotIn("UNAUTHENTICATED", res.stderr, cmd)
            self.assertNotIn("UNAVAILABLE", res.stderr, cmd)
        # No client certificate; a certificate of another CA; no CA; plaintext.
        for tls in (("--tls-ca", cert("ca.pem")),
                    ("--tls-ca", cert("ca.pem"), "--tls-cert", cert("mallory.pem"),
                     "--tls-key", cert("mallory.key")),
                    ("--tls-ca", cert("other-ca.pem"), "--tls-cert", cert("alice.pem"),
                     "--tls-key", cert("alice.key")),
                    ()):
            res = self.secure("--timeout", "5", "info", tls=tls)
            self.assertEqual(res.returncode, 1, tls)
            self.assertIn("attnroll: UNAVAILABLE: ", res.stderr, tls)

    # -- health, info, reflection ------------------------------------------

    def test_health_is_open_and_reflection_needs_a_token(self):
        with self.channel() as ch:
            check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                   response_deserializer=health_pb2.HealthCheckResponse.FromString)
            self.assertEqual(check(health_pb2.HealthCheckRequest(), timeout=10).status,
                             health_pb2.HealthCheckResponse.SERVING)
            info = ch.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            req = [reflection_pb2.ServerReflectionRequest(list_services="")]
            with self.assertRaises(grpc.RpcError) as err:
                list(info(iter(req), timeout=10))
            self.assertEqual(err.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual("UNAUTHENTICATED: " + err.exception.details(), MISSING)
            responses = list(info(iter(req), timeout=10,
                                  metadata=(("authorization", "Bearer " + BOB),)))
            names = [s.name for s in responses[0].list_services_response.service]
            self.assertIn("attnroll.v1.AttnrollService", names)
        # Health needs the TLS handshake (a client certificate) like everything else.
        with self.channel(client_cert=False) as ch:
            check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                   response_deserializer=health_pb2.HealthCheckResponse.FromString)
            with self.assertRaises(grpc.RpcError) as err:
                check(health_pb2.HealthCheckRequest(), timeout=10)
            self.assertEqual(err.exception.code(), grpc.StatusCode.UNAVAILABLE)

    # -- metrics ------------------------------------------------------------

    def test_metrics_over_tls_verify_the_scraper_and_bound_the_client_label(self):
        self.ok("info")
        self.secure("info", token_file="")
        body = self.scrape()
        self.assertRegex(body, r'attnroll_client_rpcs_total\{client="alice",code="OK"\} \d+')
        self.assertRegex(body, r'attnroll_client_rpcs_total\{client="certificate",code="UNAUTHENTICATED"\} \d+')
        labels = set(re.findall(r'attnroll_client_rpcs_total\{client="([^"]*)"', body))
        self.assertTrue(labels <= {"alice", "bob", "carol", "certificate", "anonymous"}, labels)
        self.assertNotIn("127.0.0.1", "".join(l for l in body.splitlines() if "client=" in l))
        # A scraper without a certificate, with one of another CA, or in plaintext.
        for kw in ({"client": None}, {"client": ("mallory.pem", "mallory.key")}):
            with self.assertRaises((ssl.SSLError, urllib.error.URLError, ConnectionError,
                                    http.client.HTTPException)):
                self.scrape(**kw)
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError,
                                http.client.HTTPException)):
            urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).read()

    # -- rotation -----------------------------------------------------------

    def test_zy_sighup_reads_the_new_tokens_and_the_metrics_certificate(self):
        # Carol is added, Alice's token rotated away; the metrics port's
        # certificate is replaced by one from the other CA.
        write(TOKENS, "bob %s\ncarol %s\n" % (BOB, CAROL))
        shutil.copy(cert("server2.key"), METRICS_KEY + ".new")
        os.replace(METRICS_KEY + ".new", METRICS_KEY)
        shutil.copy(cert("server2.pem"), METRICS_CERT + ".new")
        os.replace(METRICS_CERT + ".new", METRICS_CERT)
        self.server.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and self.secure("info", env_token=CAROL).returncode != 0:
            time.sleep(0.1)
        self.ok("info", env_token=CAROL)
        res = self.secure("info")
        self.assertEqual(res.stderr.strip(), "attnroll: " + NOT_VALID)
        body = self.scrape(ca="other-ca.pem")
        self.assertIn("attnroll_client_rpcs_total", body)
        with self.assertRaises((ssl.SSLError, urllib.error.URLError)):
            self.scrape(ca="ca.pem")
        log = self._server_log()
        self.assertIn("INFO SIGHUP: checking the token and certificate files", log)
        self.assertRegex(log, r"INFO tokens reloaded: file=\S+ tokens=2 names=bob,carol")
        self.assertIn("INFO tls: metrics port certificate reloaded", log)
        for token in (ALICE, BOB, CAROL):
            self.assertNotIn(token, log)

    def test_zz_the_start_was_logged(self):
        log = self._server_log()
        self.assertRegex(log, r"INFO tls: gRPC port: certificate=\"CN=localhost, issuer CN=attnroll test CA, not after \S+Z\" "
                              r"client_certificates=required reload_seconds=10")
        self.assertIn("tokens=2 names=alice,bob info_requires_auth=true", log)
        self.assertIn("INFO tls: metrics port: client_certificates=required", log)
        self.assertNotIn("open to the network", log)


if __name__ == "__main__":
    try:
        e2e_harness.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
