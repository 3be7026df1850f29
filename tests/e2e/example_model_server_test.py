#!/usr/bin/python3
"""The examples against a real attnroll-server: examples/model_server.py (a
PyTorch inference service streaming each request's attention to attnroll and
returning the saliency map with the prediction) and examples/vit_saliency.py
(the overlay a PyTorch user writes first).

The reference is independent of the package: the same model (same seed)
built in-process, its attention captured by the test's own patch
(vit_reproduction_test.AttentionCapture) and rolled out by numpy_reference.

Run: PYTHONPATH=BUILD_DIR/python /usr/bin/python3 tests/e2e/example_model_server_test.py --bin-dir BUILD_DIR
"""

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "examples")
sys.path.insert(0, HERE)
sys.path.insert(0, EXAMPLES)
import e2e_harness  # noqa: E402
import numpy_reference as nr  # noqa: E402
import vit_reproduction_test as vit  # noqa: E402
import vit_saliency  # noqa: E402

START_S = 60.0


class ExampleModelServerTest(e2e_harness.ServerTestCase):
    metrics_listen = "none"
    tmp_prefix = "attnroll_example_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model_log = open(os.path.join(cls.tmp, "model.stderr"), "wb")
        cls.model_server = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, "model_server.py"),
             "--attnroll", "127.0.0.1:%d" % cls.port, "--port", "0", "--seed", "3"],
            stdout=subprocess.PIPE, stderr=cls.model_log,
            stdin=subprocess.DEVNULL)
        line = cls.model_server.stdout.readline().decode()
        if not line.startswith("model-server listening http=127.0.0.1:"):
            cls.model_server.kill()
            cls.model_server.wait()
            cls.model_server.stdout.close()
            cls.model_log.close()
            super().tearDownClass()
            raise RuntimeError("model server did not start: %r" % line)
        cls.url = "http://" + line.split("http=")[1].strip()

    @classmethod
    def tearDownClass(cls):
        cls.model_server.terminate()
        cls.model_server.wait(timeout=20)
        cls.model_server.stdout.close()
        cls.model_log.close()
        super().tearDownClass()

    def post(self, body, query=""):
        req = urllib.request.Request(self.url + "/predict" + query, data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=START_S) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def reference(self, png):
        """(class, map) of the same model on the same picture, captured and
        rolled out without the attnroll package."""
        model = vit_saliency.build_model(None, 3)
        _, x = vit_saliency.preprocess(Image.open(io.BytesIO(png)))
        cap = vit.AttentionCapture(model)
        try:
            with torch.no_grad():
                logits = model(x)
            att = cap.attention()
        finally:
            cap.remove()
        return int(logits[0].argmax()), nr.rollout_maps(att, prefix=1, grid=(14, 14))[0]

    def test_prediction_comes_with_its_saliency_map(self):
        buf = io.BytesIO()
        vit_saliency.synthetic_image(160).save(buf, "PNG")
        png = buf.getvalue()
        status, got = self.post(png, "?overlay=1")
        self.assertEqual(status, 200, got)
        cls, want = self.reference(png)
        self.assertEqual(got["class"], cls)
        self.assertTrue(got["heads_fused_by_client"])
        np.testing.assert_allclose(np.array(got["saliency"]), want, rtol=1e-4, atol=1e-6)
        pic = Image.open(io.BytesIO(base64.b64decode(got["overlay_png_base64"])))
        self.assertEqual(pic.size[1], 224)
        # The synthetic picture's bright square (grid rows 2-4, columns 9-11)
        # holds the most salient patch of this model.
        r, c = np.unravel_index(int(np.argmax(want)), want.shape)
        self.assertTrue(2 <= r <= 5 and 8 <= c <= 12, (r, c))

    def test_bad_picture_is_a_400(self):
        status, got = self.post(b"not a picture")
        self.assertEqual(status, 400)
        self.assertTrue(got["error"].startswith("body: expected a PNG or JPEG picture"), got)
        self.assertIsNone(self.model_server.poll())

    def test_vit_saliency_script_writes_the_overlay(self):
        out = os.path.join(self.tmp, "saliency.png")
        env = dict(os.environ)
        res = subprocess.run([sys.executable, os.path.join(EXAMPLES, "vit_saliency.py"),
                              "--server", "127.0.0.1:%d" % self.port, "--out", out],
                             capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("heads fused on the client: True", res.stdout)
        pic = np.asarray(Image.open(out).convert("RGB"))
        self.assertEqual(pic.shape[0], 224)
        self.assertGreater(pic.shape[1], 224)  # the colour bar


if __name__ == "__main__":
    e2e_harness.main()
