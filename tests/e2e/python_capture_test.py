#!/usr/bin/python3
"""attnroll.capture on torchvision's vit_b_16 (random init under a fixed
seed, sharpened queries and a random head so attention is not uniform and
gradients are not zero; the model of vit_reproduction_test.py), streaming
each layer to a real attnroll-server during the forward pass.

One forward + backward with the capture installed (plus one plain forward):
  * the captured weights equal a float64 recomputation from each block's
    parameters and input (layer norm, in_proj, softmax(q k^T / sqrt(d)));
  * the logits equal those of the unpatched model;
  * the gradients were read where torch 1.13 puts them (the view's _base:
    the returned weights are views, and their own .grad stays None) and are
    non-zero;
  * streaming: block l+1 does not start before layer l was written to the
    call (each block's pre-hook waits for it), so every layer but the last
    is sent before the forward ends; an ordering, not a timing;
  * the streamed map (heads fused on the client) and a gradient-weighted
    explain of the captured tensors equal the numpy reference.

Run: PYTHONPATH=BUILD_DIR/python /usr/bin/python3 tests/e2e/python_capture_test.py --bin-dir BUILD_DIR
"""

import os
import sys
import threading
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402
import numpy_reference as nr  # noqa: E402
import vit_reproduction_test as vit  # noqa: E402  (its model and manual recomputation)

import attnroll  # noqa: E402
from attnroll.capture import attention_modules, capture_attention  # noqa: E402

WAIT_S = 60.0  # a bound on a wait that an ordering needs, not a timing assertion


class CaptureTest(e2e_harness.ServerTestCase):
    metrics_listen = "none"
    tmp_prefix = "attnroll_pycap_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        torch.set_num_threads(2)
        cls.client = attnroll.Client("127.0.0.1:%d" % cls.port, timeout=120)
        model = vit.build_model()
        vit.randomise_head(model)
        image = vit.make_image()
        with torch.no_grad():
            cls.plain_logits = model(image)[0].numpy().copy()
        cls.events = []
        sent = {}
        lock = threading.Lock()

        def on_sent(layer):
            with lock:
                cls.events.append(("sent", layer))
                sent.setdefault(layer, threading.Event()).set()

        cls.block_inputs = []
        hooks = []
        blocks = list(model.encoder.layers)
        for l, block in enumerate(blocks):
            def pre(_m, args, l=l):
                cls.block_inputs.append(args[0].detach().clone())
                if l > 0:
                    with lock:
                        ev = sent.setdefault(l - 1, threading.Event())
                    cls.waited_ok = getattr(cls, "waited_ok", True) and ev.wait(WAIT_S)
                with lock:
                    cls.events.append(("block", l))
            hooks.append(block.register_forward_pre_hook(pre))
        stream = cls.client.stream_pass(12, prefix_tokens=1, grid=(14, 14), on_sent=on_sent)
        try:
            with capture_attention(model, gradients=True, stream=stream) as cap:
                logits = model(image)
                with lock:
                    cls.events.append(("forward_end", None))
                cls.streamed = cap.result()
                cls.target = int(logits[0].argmax())
                logits[0, cls.target].backward()
            cls.logits = logits.detach()[0].numpy().copy()
            cls.att = cap.attentions()[:, 0]          # [L, H, n, n]
            cls.grad = cap.gradients()[:, 0]
            cls.views = all(w._base is not None for w in cap.weights)
            with warnings.catch_warnings():  # reading a non-leaf's .grad is the point here
                warnings.simplefilter("ignore", UserWarning)
                cls.view_grad_none = all(w.grad is None for w in cap.weights)
            cls.restored = all("forward" not in m.__dict__ for m in attention_modules(model))
            cls.manual = np.stack([vit.manual_attention(b, x)
                                   for b, x in zip(blocks, cls.block_inputs)])
        finally:
            for h in hooks:
                h.remove()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        super().tearDownClass()

    def test_captured_weights_equal_manual_recomputation(self):
        self.assertEqual(self.att.shape, (12, 12, 197, 197))
        np.testing.assert_allclose(self.att, self.manual, rtol=0, atol=2e-5)
        self.assertGreater(float(self.att.max()), 0.2)  # sharpened: far from uniform 1/197

    def test_forward_is_unchanged_and_modules_restored(self):
        np.testing.assert_allclose(self.logits, self.plain_logits, rtol=1e-4, atol=1e-5)
        self.assertTrue(self.restored)

    def test_gradient_read_from_the_base_of_the_view(self):
        self.assertTrue(self.views)
        self.assertTrue(self.view_grad_none)
        self.assertEqual(self.grad.shape, self.att.shape)
        for l in range(12):
            self.assertGreater(float(np.abs(self.grad[l]).max()), 0.0, "layer %d" % l)

    def test_layers_streamed_during_the_forward(self):
        self.assertTrue(self.waited_ok, self.events)
        end = self.events.index(("forward_end", None))
        before = {l for kind, l in self.events[:end] if kind == "sent"}
        self.assertLessEqual(set(range(11)), before, self.events)
        for l in range(11):
            self.assertLess(self.events.index(("sent", l)), self.events.index(("block", l + 1)))

    def test_streamed_map_equals_numpy(self):
        r = self.streamed
        self.assertTrue(r.heads_fused_by_client)
        self.assertEqual(r.sent_bytes, 12 * 197 * 197 * 4)
        want = nr.rollout_maps(self.att, prefix=1, grid=(14, 14))
        np.testing.assert_allclose(r.maps[0], want, rtol=1e-4, atol=1e-6)
        self.assertEqual(r.map.shape, (14, 14))

    def test_gradient_weighted_explain_equals_numpy(self):
        r = self.client.explain(self.att, gradients=self.grad, prefix_tokens=1, grid=(14, 14))
        self.assertFalse(r.heads_fused_by_client)
        want = nr.rollout_maps(self.att, grad=self.grad, rule="chefer", prefix=1, grid=(14, 14))
        np.testing.assert_allclose(r.maps[0], want, rtol=1e-4, atol=1e-6)
        self.assertEqual(r.results[0].warnings, [])


if __name__ == "__main__":
    e2e_harness.main()
