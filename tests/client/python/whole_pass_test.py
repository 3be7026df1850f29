#!/usr/bin/python3
"""attnroll.whole_pass: a client-fused pass written straight into the bytes
of one ExplainRequest.whole_pass is byte for byte protobuf's serialization
of the same message built field by field (every wire dtype, batches, weighted
fusion, residual weights, one thread or two), and a bad layer raises the
same error as the message built by protobuf, whichever thread fuses it.

Run: PYTHONPATH=BUILD_DIR/python /usr/bin/python3 tests/client/python/whole_pass_test.py
"""

import threading
import unittest

import numpy as np

import attnroll
from attnroll import native, pipeline, whole_pass
from attnroll.errors import AttnrollError
from attnroll.v1 import attnroll_pb2


def softmax_layers(rng, L, B, H, n):
    x = rng.standard_normal((L, B, H, n, n)).astype(np.float32)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


class WholePassTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = attnroll.Client("127.0.0.1:1")  # never called: builds passes only
        cls.builder = pipeline.Builder(2)

    @classmethod
    def tearDownClass(cls):
        cls.builder.close()
        cls.client.close()

    def pass_of(self, layers, **kw):
        kw.setdefault("client_fusion", "on")
        header, p, _ = self.client._single_pass(list(layers), None, dict(kw), eager=False)
        self.assertTrue(p.fused)
        return header, p

    def protobuf_bytes(self, header, p):
        r = attnroll_pb2.ExplainRequest()
        r.whole_pass.header.CopyFrom(header)
        for l in range(len(p.layers)):
            p.fill(r.whole_pass.layers.add(), l)
        return r.SerializeToString()

    def test_the_bytes_are_protobufs(self):
        rng = np.random.default_rng(7)
        cases = [
            dict(shape=(12, 1, 12, 197), kw=dict(prefix_tokens=1, grid=(14, 14))),
            dict(shape=(12, 1, 12, 197), kw=dict(prefix_tokens=1, wire="fp16")),
            dict(shape=(3, 2, 4, 33), kw=dict(wire="bf16")),
            dict(shape=(5, 2, 4, 20), kw=dict(head_weights=[1.0, 2.0, 0.5, 3.0])),
            dict(shape=(1, 1, 3, 9), kw=dict(valid_lengths=[7], wire="fp16")),
            dict(shape=(4, 2, 2, 16), kw=dict(causal=True)),
            dict(shape=(3, 2, 3, 17), kw=dict(), dtype=np.float16),  # float16 in: fp16 wire
            dict(shape=(8, 1, 2, 300), kw=dict()),  # over 2 MiB: a 4-byte outer length
        ]
        for case in cases:
            L, B, H, n = case["shape"]
            layers = softmax_layers(rng, L, B, H, n).astype(case.get("dtype", np.float32))
            kw = dict(case["kw"])
            if kw.get("causal"):
                tri = np.tril(np.ones((n, n), np.float32))
                layers = layers * tri
                layers /= layers.sum(-1, keepdims=True)
            if kw.get("valid_lengths"):
                v = kw["valid_lengths"][0]
                layers[..., v:] = 0
                layers[..., :v, :v] /= layers[..., :v, :v].sum(-1, keepdims=True)
            for residual in (False, True):
                extra = {}
                if residual:
                    extra["residual_weights"] = [rng.uniform(0, 1, (B,)).astype(np.float32)
                                                 for _ in range(L)]
                for builder in (None, self.builder):
                    with self.subTest(shape=case["shape"], kw=kw, residual=residual,
                                      threads=1 if builder is None else 2):
                        header, p = self.pass_of(layers, **kw, **extra)
                        want = self.protobuf_bytes(header, p)
                        got = whole_pass.serialize(header, p, builder)
                        self.assertEqual(len(got), len(want))
                        self.assertEqual(got, want)
                        parsed = attnroll_pb2.ExplainRequest.FromString(got)
                        self.assertEqual(len(parsed.whole_pass.layers), L)
                        self.assertEqual(list(parsed.whole_pass.layers[0].attention.shape),
                                         [B, 1, n, n])
        self.assertGreater(len(got), 1 << 21)
        self.assertEqual(got[1:5], whole_pass._varint(len(got) - 5))

    def test_a_busy_or_shut_down_pool_leaves_every_layer_to_the_caller(self):
        rng = np.random.default_rng(11)
        header, p = self.pass_of(softmax_layers(rng, 6, 1, 3, 40))
        want = self.protobuf_bytes(header, p)
        # Both of the pool's threads busy: the caller fuses every layer and
        # does not wait for the queued share (cancelled: nothing left for it).
        busy = pipeline.Builder(2)
        release = threading.Event()
        started = [threading.Event(), threading.Event()]
        blockers = [busy.submit(lambda e=e: (e.set(), release.wait(30))) for e in started]
        for e in started:
            self.assertTrue(e.wait(10))
        try:
            self.assertEqual(whole_pass.serialize(header, p, busy), want)
            self.assertFalse(any(b.done() for b in blockers))  # returned while they still block
        finally:
            release.set()
            busy.close()
        # A pool already shut down (the Client closed meanwhile): the same bytes.
        closed = pipeline.Builder(2)
        closed._get_pool().shutdown()
        self.assertEqual(whole_pass.serialize(header, p, closed), want)

    def refusal(self, layers) -> str:
        """The message of the refusal of layers through protobuf's path and
        through whole_pass on two threads, checked equal."""
        header, p = self.pass_of(layers)
        with self.assertRaises(AttnrollError) as want:
            self.protobuf_bytes(header, p)
        header, p = self.pass_of(layers)
        with self.assertRaises(AttnrollError) as got:
            whole_pass.serialize(header, p, self.builder)
        self.assertEqual(got.exception.code, want.exception.code)
        self.assertEqual(got.exception.message, want.exception.message)
        return got.exception.message

    def test_a_bad_layer_raises_protobufs_error_from_either_thread(self):
        rng = np.random.default_rng(3)
        base = softmax_layers(rng, 12, 1, 4, 24)
        for bad in ([9], [3, 9], [0], [11]):
            layers = base.copy()
            for l in bad:
                layers[l, 0, 2, 5, 7] = -0.25
            with self.subTest(bad=bad):
                message = self.refusal(layers)
                self.assertIn("layer %d" % bad[0], message)
                self.assertIn("-0.25", message)
        # Two sequences: the C++ client's order is sequence, then layer, so
        # sequence 0's bad layer 9 is named before sequence 1's bad layer 2.
        layers = softmax_layers(rng, 12, 2, 4, 24)
        layers[9, 0, 1, 3, 3] = -0.5
        layers[2, 1, 0, 4, 4] = -0.75
        message = self.refusal(layers)
        self.assertIn("layer 9", message)
        self.assertIn("sequence 0", message)

    def test_varints(self):
        for n in (0, 1, 127, 128, 300, 16383, 16384, 1 << 21, (1 << 35) + 5):
            got = whole_pass._varint(n)
            value = sum((b & 0x7F) << (7 * i) for i, b in enumerate(got))
            self.assertEqual(value, n)
            self.assertTrue(all(b & 0x80 for b in got[:-1]))
            self.assertFalse(got[-1] & 0x80)
            self.assertEqual(len(got), max(1, (n.bit_length() + 6) // 7))


if __name__ == "__main__":
    print("native library:", native.available())
    unittest.main()
