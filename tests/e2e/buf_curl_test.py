"""Any gRPC language: the real attnroll-server driven through server
reflection only, with a generic client (`buf curl` from the npm package
@bufbuild/buf; no .proto file, no generated code): --list-methods (health
included: its descriptor is served), GetServerInfo, a client-streaming Explain
in JSON whose map is checked against the numpy reference, a refused pass, and
health Check.

buf is installed once into BUILD_DIR/npm-buf (npm's cache in
BUILD_DIR/npm-buf/cache), so later runs need no network.  Uses Debian's
/usr/bin/python3 with python3-numpy and npm (deploy/install-deps.sh).
"""

import base64
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402
import numpy_reference as ref  # noqa: E402

BUF_PACKAGE = "@bufbuild/buf@1.75.0"


def install_buf(bin_dir):
    """Returns the path of buf, installing BUF_PACKAGE with npm if missing."""
    prefix = os.path.join(os.path.abspath(bin_dir), "npm-buf")
    buf = os.path.join(prefix, "node_modules", ".bin", "buf")
    if not os.path.exists(buf):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", prefix,
                        "--cache", os.path.join(prefix, "cache"), BUF_PACKAGE],
                       check=True, stdin=subprocess.DEVNULL, timeout=300)
    return buf


class BufCurlTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_buf_"

    @classmethod
    def setUpClass(cls):
        cls.buf = install_buf(e2e_harness.BIN_DIR)
        super().setUpClass()

    def curl(self, *args, data=None):
        cmd = [self.buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge"] + list(args)
        return subprocess.run(cmd, input=data, capture_output=True, text=True, timeout=60)

    def url(self, method=""):
        return "http://127.0.0.1:%d/%s" % (self.port, method)

    def call(self, method, data="{}"):
        res = self.curl("-d", "@-", self.url(method), data=data)
        self.assertEqual(res.returncode, 0, res.stderr)
        return json.loads(res.stdout)

    def test_list_methods_through_reflection(self):
        res = self.curl("--list-methods", self.url())
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stderr, "")
        self.assertEqual(sorted(res.stdout.split()), [
            "attnroll.v1.AttnrollService/Audit",
            "attnroll.v1.AttnrollService/Compare",
            "attnroll.v1.AttnrollService/Explain",
            "attnroll.v1.AttnrollService/ExplainPair",
            "attnroll.v1.AttnrollService/ExplainStream",
            "attnroll.v1.AttnrollService/GetServerInfo",
            "attnroll.v1.AttnrollService/ListBaselines",
            "attnroll.v1.AttnrollService/Monitor",
            "attnroll.v1.AttnrollService/PinBaseline",
            "attnroll.v1.AttnrollService/RemoveBaseline",
            "grpc.health.v1.Health/Check",
            "grpc.health.v1.Health/Watch",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ])

    def test_server_info(self):
        info = self.call("attnroll.v1.AttnrollService/GetServerInfo")
        self.assertEqual(info["version"], "0.1.0")
        self.assertEqual(info["limits"]["workers"], 2)  # the harness's --workers 2
        for analysis in ("rollout", "grad-rollout", "flow"):
            self.assertIn(analysis, info["analyses"])

    def test_health_check(self):
        self.assertEqual(self.call("grpc.health.v1.Health/Check"), {"status": "SERVING"})
        self.assertEqual(self.call("grpc.health.v1.Health/Check",
                                   json.dumps({"service": "attnroll.v1.AttnrollService"})),
                         {"status": "SERVING"})
        res = self.curl("-d", '{"service": "nope"}', self.url("grpc.health.v1.Health/Check"))
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("not_found", res.stderr)

    def explain_messages(self, att, header_extra=None):
        L, H, n, _ = att.shape
        header = {"requestId": "buf", "layout": {"numLayers": L, "numHeads": H, "numTokens": n,
                                                 "prefixTokens": 1, "grid": {"height": 2, "width": 3}},
                  "analyses": [{"rollout": {"fusion": "HEAD_FUSION_MAX", "residual": 0.3}}]}
        header.update(header_extra or {})
        messages = [{"header": header}]
        for layer in range(L):
            messages.append({"layer": {"layer": layer, "attention": {
                "dtype": "DTYPE_FP32", "shape": [1, H, n, n],
                "data": base64.b64encode(att[layer][None].astype("<f4").tobytes()).decode()}}})
        return "\n".join(json.dumps(m) for m in messages)

    def test_client_streaming_explain_in_json(self):
        rng = np.random.default_rng(11)
        att = ref.make_attention(rng, 4, 3, 7)
        response = self.call("attnroll.v1.AttnrollService/Explain", self.explain_messages(att))
        self.assertEqual(response["requestId"], "buf")
        (result,) = response["results"]
        (tensor,) = result["maps"]
        self.assertEqual(tensor["dtype"], "DTYPE_FP32")
        self.assertEqual([int(s) for s in tensor["shape"]], [1, 2, 3])
        got = np.frombuffer(base64.b64decode(tensor["data"]), dtype="<f4").reshape(1, 2, 3)
        want = ref.rollout_maps(att, fusion="max", residual=0.3, prefix=1, grid=(2, 3))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)

    def test_a_refused_pass_names_the_field(self):
        rng = np.random.default_rng(12)
        att = ref.make_attention(rng, 2, 2, 7)
        bad = self.explain_messages(att).replace('"numHeads": 2', '"numHeads": 3')
        res = self.curl("-d", "@-", self.url("attnroll.v1.AttnrollService/Explain"), data=bad)
        self.assertNotEqual(res.returncode, 0)
        err = json.loads(res.stderr)
        self.assertEqual(err["code"], "invalid_argument")
        self.assertEqual(err["message"],
                         "layer: out of order: layer 0 is incomplete (heads 2..2 missing), got layer 1")


if __name__ == "__main__":
    e2e_harness.main()
