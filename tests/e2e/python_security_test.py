#!/usr/bin/python3
"""The Python package's tls= and token= options against a real attnroll-server
with TLS, mutual TLS and bearer tokens, certificates made at test time by
tests/testutil/make_test_certs.sh (the openssl command):

- TLS with the test CA (a file path, bytes, a server_name override, or a
  grpc.ChannelCredentials): calls work and their maps match numpy;
- without the CA (system roots, another CA) or in plain text the call fails
  with AttnrollError(UNAVAILABLE), before any RPC reaches the server;
- mutual TLS: a client certificate of the CA passes; none, or one of another
  CA, is refused in the handshake (UNAVAILABLE);
- tokens from Python: without one, or with a wrong one, AttnrollError
  (UNAUTHENTICATED) with the server's exact message, never holding the token;
  with one, every call works; a client certificate alone is an identity when
  the server has no token file.

Run: /usr/bin/python3 tests/e2e/python_security_test.py --bin-dir BUILD_DIR
(PYTHONPATH=BUILD_DIR/python, where the build lays out the package).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import grpc
import numpy as np
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402
import numpy_reference as nr  # noqa: E402

import attnroll  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE_CERTS = os.path.join(HERE, "..", "testutil", "make_test_certs.sh")

TMP = tempfile.mkdtemp(prefix="attnroll_pysec_")
CERTS = os.path.join(TMP, "certs")
subprocess.run([MAKE_CERTS, CERTS], check=True, stdout=subprocess.DEVNULL)

ALICE = "alice-0b7e3c9a51d2f846"
BOB = "bob-6c1f08e2d4a97b35"
TOKENS = os.path.join(TMP, "tokens")
MISSING = ('authentication: metadata "authorization": missing: expected '
           '"Bearer <token>" with a token of the server\'s token file')
NOT_VALID = ("authentication: metadata \"authorization\": the bearer token is not "
             "one of the server's tokens")
with open(TOKENS, "w") as f:
    f.write("alice %s\nbob %s\n" % (ALICE, BOB))
os.chmod(TOKENS, 0o600)


def cert(name):
    return os.path.join(CERTS, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class _SecureServer(e2e_harness.ServerTestCase):
    metrics_listen = "none"
    cli_timeout_s = 60.0

    def client(self, **kw):
        kw.setdefault("timeout", 10)
        c = attnroll.Client("127.0.0.1:%d" % self.port, **kw)
        self.addCleanup(c.close)
        return c

    def assertRefused(self, code, client, message=None, secret=None):
        """client.server_info() fails with AttnrollError(code[, message])."""
        with self.assertRaises(attnroll.AttnrollError) as ctx:
            client.server_info()
        err = ctx.exception
        self.assertIsInstance(err.code, grpc.StatusCode)
        self.assertEqual(err.code, code, err.message)
        if message is not None:
            self.assertEqual(err.message, message)
            self.assertEqual(str(err), "%s: %s" % (code.name, message))
        if secret is not None:
            self.assertNotIn(secret, str(err))
        self.assertIsNone(self.server.poll(), "server died")
        return err

    def assertExplains(self, client):
        """An explain and a compare over `client` match numpy and scipy."""
        rng = np.random.default_rng(3)
        att = nr.make_attention(rng, 3, 2, 9).astype(np.float32)
        want = nr.rollout_maps(att.astype(np.float64))
        got = client.explain(att).maps[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        other = nr.rollout_maps(nr.make_attention(rng, 3, 2, 9))[0].astype(np.float32)
        mine = np.asarray(got, dtype=np.float32).reshape(-1)
        (res,) = client.compare(mine, other)
        self.assertAlmostEqual(res["pearson"], scipy.stats.pearsonr(mine, other)[0], places=5)


class PythonTlsTest(_SecureServer):
    """TLS (no client certificates) with a token file."""
    tmp_prefix = "attnroll_pysec_tls_"
    server_flags = ("--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                    "--token-file", TOKENS, "--info-requires-auth")

    def test_tls_with_the_ca_and_a_token_works_in_every_form(self):
        forms = [
            dict(root_certificates=cert("ca.pem")),                 # a path
            dict(root_certificates=read(cert("ca.pem"))),           # bytes
            dict(root_certificates=cert("ca.pem"), server_name="localhost"),
            grpc.ssl_channel_credentials(root_certificates=read(cert("ca.pem"))),
        ]
        for tls in forms:
            c = self.client(tls=tls, token=ALICE)
            self.assertEqual(c.server_info()["limits"]["max_tokens"], 8192, tls)
        self.assertExplains(self.client(tls=forms[0], token=BOB))

    def test_without_the_ca_or_in_plain_text_the_call_is_unavailable(self):
        for tls in (True,                                            # system roots
                    dict(root_certificates=cert("other-ca.pem")),    # another CA
                    dict(root_certificates=cert("ca.pem"), server_name="attnroll.invalid"),
                    False):                                          # plain text
            err = self.assertRefused(grpc.StatusCode.UNAVAILABLE,
                                     self.client(tls=tls, token=ALICE, timeout=5))
            self.assertNotIn(ALICE, str(err), tls)

    def test_a_missing_or_wrong_token_is_unauthenticated(self):
        ca = dict(root_certificates=cert("ca.pem"))
        self.assertRefused(grpc.StatusCode.UNAUTHENTICATED, self.client(tls=ca), MISSING)
        guess = ALICE[:-1] + "7"
        self.assertRefused(grpc.StatusCode.UNAUTHENTICATED, self.client(tls=ca, token=guess),
                           NOT_VALID, secret=guess)
        # Refused on the analysis calls too, with the same message.
        with self.assertRaises(attnroll.AttnrollError) as ctx:
            self.client(tls=ca).explain(nr.uniform_attention(2, 2, 4).astype(np.float32))
        self.assertEqual((ctx.exception.code, ctx.exception.message),
                         (grpc.StatusCode.UNAUTHENTICATED, MISSING))


class PythonMutualTlsTest(_SecureServer):
    """Mutual TLS (client certificates of ca.pem required) with a token file."""
    tmp_prefix = "attnroll_pysec_mtls_"
    server_flags = ("--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                    "--tls-client-ca", cert("ca.pem"), "--token-file", TOKENS,
                    "--info-requires-auth")

    def mtls(self, who="alice", ca="ca.pem"):
        return dict(root_certificates=cert(ca), certificate_chain=cert(who + ".pem"),
                    private_key=cert(who + ".key"))

    def test_a_certificate_of_the_ca_and_a_token_pass(self):
        self.client(tls=self.mtls(), token=ALICE).server_info()
        self.client(tls=self.mtls("bob"), token=ALICE).server_info()  # the token names the client
        creds = grpc.ssl_channel_credentials(read(cert("ca.pem")), read(cert("alice.key")),
                                             read(cert("alice.pem")))
        self.assertExplains(self.client(tls=creds, token=BOB))

    def test_no_certificate_or_one_of_another_ca_is_refused_in_the_handshake(self):
        for tls in (dict(root_certificates=cert("ca.pem")),          # no client certificate
                    self.mtls("mallory")):                           # another CA's
            err = self.assertRefused(grpc.StatusCode.UNAVAILABLE,
                                     self.client(tls=tls, token=ALICE, timeout=5))
            self.assertNotIn(ALICE, str(err))

    def test_a_certificate_without_a_token_is_unauthenticated(self):
        self.assertRefused(grpc.StatusCode.UNAUTHENTICATED, self.client(tls=self.mtls()), MISSING)


class PythonCertificateIdentityTest(_SecureServer):
    """Mutual TLS without a token file: the certificate is the identity."""
    tmp_prefix = "attnroll_pysec_cert_"
    server_flags = ("--tls-cert", cert("server.pem"), "--tls-key", cert("server.key"),
                    "--tls-client-ca", cert("ca.pem"), "--info-requires-auth")

    def test_the_certificate_alone_authenticates(self):
        tls = dict(root_certificates=cert("ca.pem"), certificate_chain=cert("alice.pem"),
                   private_key=cert("alice.key"))
        self.assertExplains(self.client(tls=tls))
        self.assertRefused(grpc.StatusCode.UNAVAILABLE,
                           self.client(tls=dict(root_certificates=cert("ca.pem")), timeout=5))


if __name__ == "__main__":
    try:
        e2e_harness.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
