#!/usr/bin/python3
"""The Python package attnroll (client/python) against a real attnroll-server:
every call's maps against the numpy reference (numpy_reference.py), client-side
head fusion (bytes, maps, and the same rule and messages as the C++ client,
driven through the attnroll CLI on the same inputs), wire dtypes, torch
inputs, flow progress, compare (scipy), explain-pair, audit, encoder-decoder,
bad inputs (AttnrollError with the exact code and message), and the TLS /
bearer-token options against a small gRPC server of the test's own.

Run: /usr/bin/python3 tests/e2e/python_client_test.py --bin-dir BUILD_DIR
(PYTHONPATH=BUILD_DIR/python, where the build lays out the package).
"""

import os
import subprocess
import sys
import tempfile
import unittest

import grpc
import numpy as np
from scipy import stats
from scipy.spatial import distance

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402
import numpy_reference as nr  # noqa: E402

import attnroll  # noqa: E402
from attnroll import client as client_module, fusion, native, tensors  # noqa: E402
from attnroll.v1 import attnroll_pb2, attnroll_pb2_grpc, tensor_pb2  # noqa: E402

RTOL, ATOL = 1e-4, 1e-6


def f32(x):
    return np.asarray(x, dtype=np.float32)


class PythonClientTest(e2e_harness.ServerTestCase):
    metrics_listen = "none"
    server_flags = ("--max-layers", "16")
    tmp_prefix = "attnroll_py_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = attnroll.Client("127.0.0.1:%d" % cls.port, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        super().tearDownClass()

    def assertMaps(self, got, want, msg=None, rtol=RTOL, atol=ATOL):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=msg or "")

    def assertRefused(self, code, message, fn, *args, **kw):
        with self.assertRaises(attnroll.AttnrollError) as ctx:
            fn(*args, **kw)
        self.assertEqual(ctx.exception.code, code, ctx.exception.message)
        self.assertEqual(ctx.exception.message, message)
        self.assertIsNone(self.server.poll(), "server died")
        return ctx.exception

    # -- rollout, fusion, wire ----------------------------------------------

    def test_rollout_every_head_and_client_fused_match_numpy(self):
        rng = np.random.default_rng(1)
        att = f32(nr.make_attention(rng, 4, 6, 17))
        want = nr.rollout_maps(att, rows=(0, 5), prefix=1, grid=(4, 4))
        sent = {}
        for mode in ("off", "auto", "on"):
            r = self.client.explain(att, rows=[0, 5], prefix_tokens=1, grid=(4, 4),
                                    client_fusion=mode)
            self.assertEqual(r.heads_fused_by_client, mode != "off", mode)
            self.assertEqual(r.maps[0].shape, (2, 4, 4))
            self.assertMaps(r.maps[0], want, mode)
            sent[mode] = r.sent_bytes
        self.assertEqual(sent["off"], 4 * 6 * 17 * 17 * 4)
        self.assertEqual(sent["auto"], sent["off"] // 6)
        self.assertEqual(sent["on"], sent["auto"])

    def test_weighted_fusion_fused_on_the_client(self):
        rng = np.random.default_rng(2)
        att = f32(nr.make_attention(rng, 3, 4, 9))
        w = [2.5, 0.25, 1.0, 0.125]
        want = nr.rollout_maps(att, fusion="weighted", weights=w)
        for mode in ("off", "auto"):
            r = self.client.explain(att, fusion="weighted", head_weights=w, client_fusion=mode)
            self.assertEqual(r.heads_fused_by_client, mode == "auto")
            self.assertMaps(r.maps[0], want, mode)
        # Without renormalisation the weights' scale matters: the server
        # multiplies the fused matrix by their sum.
        want = nr.rollout_maps(att, fusion="weighted", weights=w, renorm=False)
        r = self.client.explain(att, fusion="weighted", head_weights=w, no_renormalize=True)
        self.assertTrue(r.heads_fused_by_client)
        self.assertMaps(r.maps[0], want)

    def test_heads_needed_are_sent(self):
        rng = np.random.default_rng(3)
        att = f32(nr.make_attention(rng, 3, 4, 8))
        for fus in ("max", "min"):
            r = self.client.explain(att, fusion=fus)
            self.assertFalse(r.heads_fused_by_client, fus)
            self.assertMaps(r.maps[0], nr.rollout_maps(att, fusion=fus), fus)
        r = self.client.explain(att, fusion="none")
        self.assertFalse(r.heads_fused_by_client)
        self.assertMaps(r.maps[0], nr.rollout_maps(att, fusion="none"))

    def test_wire_dtypes_and_torch_inputs(self):
        import torch
        rng = np.random.default_rng(4)
        att = f32(nr.make_attention(rng, 3, 4, 10))
        for wire in ("fp16", "bf16"):
            r = self.client.explain(att, wire=wire, client_fusion="off")
            self.assertEqual(r.sent_bytes, att.size * 2)
            self.assertMaps(r.maps[0], nr.rollout_maps(nr.wire_round(att, wire)), wire,
                            rtol=1e-3, atol=1e-5)
            r = self.client.explain(att, wire=wire)
            fused = nr.wire_round(att.mean(1, keepdims=True), wire)
            self.assertMaps(r.maps[0], nr.rollout_maps(fused), wire, rtol=1e-3, atol=1e-5)
        # torch tensors: a list of per-layer [B, H, n, n] as Hugging Face returns them.
        layers = [torch.from_numpy(a[None]) for a in att]
        r = self.client.explain(layers)
        self.assertMaps(r.maps[0], nr.rollout_maps(att))
        # bfloat16 tensors go on the wire as bf16 by default, their values kept.
        bf = [t.to(torch.bfloat16) for t in layers]
        r = self.client.explain(bf, client_fusion="off", row_sum_tolerance=0.05)
        self.assertEqual(r.wire, "bf16")
        exact = np.stack([t.float().numpy()[0] for t in bf])
        self.assertMaps(r.maps[0], nr.rollout_maps(exact), rtol=1e-4, atol=1e-6)
        r = self.client.explain(att.astype(np.float16), client_fusion="off")
        self.assertEqual(r.wire, "fp16")

    def test_bf16_rounding_is_to_nearest_even(self):
        from attnroll import tensors
        # 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even (1).
        x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -2.0, np.inf], np.float32)
        t = tensors.encode(x, "bf16")
        back = tensors.decode(t)
        np.testing.assert_array_equal(back, nr.round_bf16(x))
        np.testing.assert_array_equal(back[:3], [1.0, 1 + 2 ** -6, 1.0])

    def test_batch_with_padding(self):
        rng = np.random.default_rng(5)
        att = f32(nr.make_attention(rng, 3, 2, 9, batch=2, valid_lengths=[9, 6]))
        layers = list(att.transpose(1, 0, 2, 3, 4))  # per layer [B, H, n, n]
        r = self.client.explain(layers, valid_lengths=[9, 6], rows=[0, 2])
        want = nr.rollout_maps(att, valid_lengths=[9, 6], rows=(0, 2))
        self.assertTrue(r.heads_fused_by_client)
        self.assertEqual(len(r.maps), 2)
        self.assertMaps(r.maps[0], want[0][:, :9])
        self.assertMaps(r.maps[1], want[1][:, :6])

    def test_gradient_rules(self):
        rng = np.random.default_rng(6)
        att = f32(nr.make_attention(rng, 3, 4, 8))
        grad = f32(nr.make_gradient(rng, att.shape))
        for rule in ("chefer", "vit_explain"):
            r = self.client.explain(att, gradients=grad, gradient_rule=rule)
            self.assertFalse(r.heads_fused_by_client)
            self.assertMaps(r.maps[0], nr.rollout_maps(att, grad=grad, rule=rule), rule)

    def test_per_layer_and_pruning(self):
        rng = np.random.default_rng(7)
        att = f32(nr.make_attention(rng, 4, 3, 10))
        r = self.client.explain(att, per_layer=True, layers=(1, 3), rows="mean")
        self.assertEqual(r.results[0].layers, [1, 2, 3])
        self.assertMaps(r.maps[0], nr.rollout_maps(att, per_layer=True, layers=(1, 3),
                                                     rows="mean"))
        r = self.client.explain(att, top_k=3, scaling="max")
        self.assertMaps(r.maps[0], nr.rollout_maps(att, top_k=3, scale="max"))

    def test_several_analyses_and_flow_with_progress(self):
        rng = np.random.default_rng(8)
        att = f32(nr.make_attention(rng, 2, 3, 7))
        events = []
        r = self.client.explain(att, analyses=[dict(name="r"), dict(method="flow", name="f")],
                                progress=lambda a, done, total: events.append((a, done, total)))
        self.assertEqual([x.name for x in r.results], ["r", "f"])
        self.assertEqual(r.results[1].path, "flow")
        self.assertTrue(r.heads_fused_by_client)  # both mean: one fused matrix serves both
        self.assertMaps(r.results[0].maps[0], nr.rollout_maps(att))
        import networkx as nx
        layers = nr.fused_layers(att, 0.5, "mean")
        g = nx.DiGraph()
        for l in range(1, len(layers) + 1):
            for i in range(7):
                for j in range(7):
                    g.add_edge((l - 1, j), (l, i), capacity=float(layers[l - 1][i, j]))
        flows = np.array([nx.maximum_flow_value(g, (0, j), (len(layers), 0)) for j in range(7)])
        self.assertMaps(r.results[1].maps[0][0], flows / flows.sum(), rtol=1e-5, atol=1e-7)
        self.assertTrue(events)
        self.assertTrue(all(a == 1 and t == 7 for a, _, t in events), events)
        done = [d for _, d, _ in events]
        self.assertEqual(done, sorted(done))
        self.assertEqual(done[-1], 7)

    def test_encoder_decoder_rollout(self):
        rng = np.random.default_rng(9)
        enc = f32(nr.make_attention(rng, 2, 2, 6))
        dec = f32(nr.make_attention(rng, 2, 2, 4))
        cross = f32(nr.softmax(rng.normal(size=(2, 2, 4, 6)) * 2))
        r = self.client.explain_encoder_decoder(enc, dec, cross, composition="rollout",
                                                return_encoder=True)
        rde, ree, _ = nr.encoder_decoder_rollout(enc.astype(np.float64), dec.astype(np.float64),
                                                 cross.astype(np.float64))
        self.assertEqual(r.results[0].path, "encoder_decoder_rollout")
        self.assertMaps(r.maps[0], rde)
        self.assertMaps(r.results[0].encoder_maps[0], ree)

    # -- compare, pair, audit -----------------------------------------------

    def test_compare_against_scipy(self):
        rng = np.random.default_rng(10)
        a, b = f32(rng.random(36)), f32(rng.random(36))
        (c,) = self.client.compare(a, b, grid=(6, 6), ssim_window=3)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        self.assertAlmostEqual(c["spearman"], stats.spearmanr(a64, b64)[0], places=10)
        self.assertAlmostEqual(c["pearson"], stats.pearsonr(a64, b64)[0], places=10)
        self.assertAlmostEqual(c["kendall_tau_b"], stats.kendalltau(a64, b64)[0], places=10)
        self.assertAlmostEqual(c["js_divergence"],
                               distance.jensenshannon(a64 / a64.sum(), b64 / b64.sum()) ** 2,
                               places=10)
        self.assertIsNotNone(c["ssim"])
        np.testing.assert_array_equal(c["difference"], (b - a).reshape(6, 6))
        (c,) = self.client.compare(a, np.full(36, 0.5, np.float32))
        self.assertIsNone(c["ssim"])  # no grid
        self.assertEqual(len(self.client.compare(a.reshape(6, 6), b.reshape(6, 6))), 6)  # [k, n]
        self.assertIsNone(c["spearman"])
        self.assertEqual(c["notes"]["spearman"], "map b is constant: Spearman undefined")

    def test_explain_pair(self):
        rng = np.random.default_rng(11)
        base = f32(nr.make_attention(rng, 3, 2, 10))
        cand = f32(nr.make_attention(rng, 3, 2, 10))
        r = self.client.explain_pair(base, cand, prefix_tokens=1, grid=(3, 3))
        wb = nr.rollout_maps(base, prefix=1, grid=(3, 3))
        wc = nr.rollout_maps(cand, prefix=1, grid=(3, 3))
        self.assertMaps(r.baseline.maps[0], wb)
        self.assertMaps(r.candidate.maps[0], wc)
        self.assertTrue(r.baseline.heads_fused_by_client)
        self.assertEqual(len(r.comparisons), 1)
        self.assertAlmostEqual(r.comparisons[0]["spearman"],
                               stats.spearmanr(wb.ravel(), wc.ravel())[0], places=5)

    def test_audit_maps_and_attention_items(self):
        rng = np.random.default_rng(12)
        items, l1 = [], []
        for k in range(6):
            a = f32(rng.random(16) + 0.1)
            b = a.copy()
            b[:4] *= 1 + k  # planted shift towards the first row of the grid
            items.append(dict(id="m%d" % k, baseline=a.reshape(4, 4), candidate=b.reshape(4, 4),
                              group="g%d" % (k % 2)))
            l1.append(np.abs(a / a.sum() - b / b.sum()).sum())
        att = f32(nr.make_attention(rng, 2, 2, 17))
        items.append(dict(id="att", baseline_attention=att, candidate_attention=att,
                          prefix_tokens=1, grid=(4, 4)))
        seen = []
        res = self.client.audit(iter(items), grid=(4, 4), thresholds=dict(max_l1=0.1),
                                on_item=seen.append)
        self.assertEqual(sorted(i["id"] for i in res.items), sorted(i["id"] for i in items))
        self.assertEqual(len(seen), 7)
        att_item = [i for i in res.items if i["id"] == "att"][0]
        self.assertIsNone(att_item["error"])
        self.assertEqual(att_item["comparison"]["l1"], 0.0)
        overall = res.report["overall"]
        self.assertEqual(overall["items"], 7)
        by = {m["metric"]: m for m in overall["metrics"]}
        self.assertAlmostEqual(by["l1"]["median"], float(np.median(l1 + [0.0])), places=6)
        self.assertEqual(overall["drifted"], sum(1 for v in l1 if v > 0.1))
        self.assertEqual(overall["mean_baseline"].shape, (4, 4))
        self.assertEqual([g["group"] for g in res.report["groups"]], ["g0", "g1"])

    def test_audit_item_refused_in_band(self):
        res = self.client.audit([dict(id="x", baseline=np.ones(4), candidate=np.zeros(4))],
                                map_length=4)
        err = res.items[0]["error"]
        self.assertEqual(err["code_name"], "INVALID_ARGUMENT")
        self.assertIn("sum", err["message"])

    # -- bad inputs ----------------------------------------------------------

    def test_bad_inputs_raise_the_exact_code_and_message(self):
        rng = np.random.default_rng(13)
        att = f32(nr.make_attention(rng, 3, 4, 10))
        bad = att.copy()
        bad[1, 2, 3, 4] += 0.01
        server_msg = ("attention (layer 1, head 2, sequence 0, row 3): expected the row over "
                      "the 10 valid tokens to sum to 1 +- 0.001, got 1.01")
        inv = grpc.StatusCode.INVALID_ARGUMENT
        self.assertRefused(inv, server_msg, self.client.explain, bad, client_fusion="off")
        self.assertRefused(inv, server_msg + ", found by the client while fusing heads",
                           self.client.explain, bad)
        self.assertRefused(
            inv, "cannot fuse heads on the client: analyses[0].rollout.fusion: fusing heads on "
                 "the client needs MEAN or WEIGHTED fusion, got MAX",
            self.client.explain, att, fusion="max", client_fusion="on")
        self.assertRefused(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "layout.num_layers: 17 exceeds the server limit of 16", self.client.explain,
            f32(nr.make_attention(rng, 17, 1, 3)))
        self.assertRefused(inv, "attentions[1]: expected shape [4, 10, 10] (that of layer 0), "
                                "got [4, 9, 9]",
                           self.client.explain, [att[0], att[1, :, :9, :9]])
        self.assertRefused(inv, "analyses[0] (sequence 0): rollout.layers: expected 0 <= first <= "
                                "last < num_layers = 3, got 0:3", self.client.explain, att, layers=(0, 3),
                           client_fusion="off")

    def test_pipelined_fusion_refuses_in_the_cpp_clients_order(self):
        # explain checks and fuses each layer as gRPC sends the one before;
        # a refusal still names the first bad row in the C++ client's order
        # (sequence, layer, head), ends the call, and leaves the client usable.
        rng = np.random.default_rng(21)
        att = f32(nr.make_attention(rng, 4, 3, 9, batch=2)).transpose(1, 0, 2, 3, 4).copy()
        bad = att.copy()
        bad[0, 1, 2, 5, 0] += 0.01   # layer 0, sequence 1: found first while sending
        bad[2, 0, 1, 4, 3] = -0.001  # layer 2, sequence 0: first in the C++ order
        bad[2, 0, 1, 4, 2] += 0.001
        inv = grpc.StatusCode.INVALID_ARGUMENT
        self.assertRefused(inv, "attention (layer 2, head 1, sequence 0, row 4): expected "
                                "probabilities >= 0, got -0.001 at column 3, found by the client "
                                "while fusing heads", self.client.explain, bad)
        only_late = att.copy()
        only_late[3, 1, 0, 8, 8] = np.nan
        self.assertRefused(inv, "attention (layer 3, head 0, sequence 1, row 8): expected finite "
                                "values, got nan at column 8, found by the client while fusing "
                                "heads", self.client.explain, only_late)
        # -0.0 has its sign bit set: the fast check flags it, the exact check accepts it.
        signed_zero = att.copy()
        signed_zero[1, 0, 2, 3, np.argmin(signed_zero[1, 0, 2, 3])] = -0.0
        r = self.client.explain(signed_zero)
        self.assertTrue(r.heads_fused_by_client)
        for b in range(2):
            self.assertMaps(r.maps[b], nr.rollout_maps(signed_zero[:, b]), "sequence %d" % b)
        # Padding (outside valid_lengths) is never checked, whatever it holds.
        padded = att.copy()
        padded[:, 1, :, 7:, :] = np.nan
        padded[:, 1, :, :7, 7:] = 0.0
        padded[:, 1, :, :7, :7] /= padded[:, 1, :, :7, :7].sum(-1, keepdims=True)
        r = self.client.explain(padded, valid_lengths=[9, 7])
        self.assertTrue(r.heads_fused_by_client)
        self.assertMaps(r.maps[1], nr.rollout_maps(padded[:, 1, :, :7, :7]))
        self.assertMaps(r.maps[0], nr.rollout_maps(att[:, 0]))

    def test_mean_fusion_into_a_given_buffer(self):
        rng = np.random.default_rng(22)
        x = f32(nr.make_attention(rng, 2, 5, 7))  # [B = 2, H = 5, 7, 7] as one layer
        out = np.full((2, 1, 7, 7), np.nan, dtype=np.float32)
        got = fusion.fuse_layer(x, [2.0] * 5, 0, out=out)
        self.assertIs(got, out)
        np.testing.assert_allclose(got[:, 0], x.astype(np.float64).mean(1), rtol=1e-6, atol=1e-7)

    # -- the C++ client's head fusion agrees ---------------------------------

    def cli_error(self, att, extra):
        inp = self._write("cli_in", att)
        res = self.cli("explain", "--attention", inp, "--out", os.path.join(self.tmp, "o.npy"),
                       *extra)
        self.assertNotEqual(res.returncode, 0, res.stdout)
        return res.stderr

    def test_fusion_rule_and_messages_agree_with_the_cpp_client(self):
        rng = np.random.default_rng(14)
        base = f32(nr.make_attention(rng, 3, 4, 8))
        cases = []
        x = base.copy(); x[2, 1, 5, 0] += 0.02; cases.append(("row_sum", x, {}))            # noqa
        x = base.copy(); x[0, 3, 2, 1] = -0.001; x[0, 2, 2, 1] += 0.001                      # noqa
        cases.append(("negative_hidden_by_mean", x, {}))
        x = base.copy(); x[1, 0, 0, 0] = np.nan; cases.append(("nan", x, {}))                # noqa
        x = base.copy(); x[2, 3, 7, 7] = np.inf; cases.append(("inf", x, {}))                # noqa
        causal = f32(nr.make_causal_attention(rng, 3, 4, 8))
        x = causal.copy(); x[1, 2, 3, 6] = 0.01; x[1, 2, 3, 0] -= 0.01                      # noqa
        cases.append(("causal_upper", x, dict(causal=True)))
        x = base.copy(); x[1, 2, 4, 0] += 0.002                                              # noqa
        cases.append(("fp16_tolerance_ok", x, dict(wire="fp16")))
        x = base.copy(); x[1, 2, 4, 0] += 0.006                                              # noqa
        cases.append(("fp16_tolerance_bad", x, dict(wire="fp16")))
        for name, att, kw in cases:
            cli_args = ["--client-fusion", "on"] + (["--causal"] if kw.get("causal") else []) + \
                (["--wire", kw["wire"]] if "wire" in kw else [])
            inp = self._write("agree_" + name, att)
            res = self.cli("explain", "--attention", inp, "--out",
                           os.path.join(self.tmp, "agree.npy"), *cli_args)
            try:
                got = self.client.explain(att, client_fusion="on", **kw)
                py_err = None
            except attnroll.AttnrollError as e:
                py_err = e
            if res.returncode == 0:
                self.assertIsNone(py_err, name)
                self.assertMaps(got.maps[0][0], np.load(os.path.join(self.tmp, "agree.npy"))
                                .reshape(got.maps[0][0].shape), name, rtol=1e-5, atol=1e-7)
                self.assertTrue(got.heads_fused_by_client)
                continue
            self.assertIsNotNone(py_err, "%s: C++ refused, Python accepted:\n%s"
                                 % (name, res.stderr))
            self.assertEqual(py_err.code, grpc.StatusCode.INVALID_ARGUMENT, name)
            self.assertTrue(py_err.message.endswith("found by the client while fusing heads"),
                            py_err.message)
            self.assertIn(py_err.message, res.stderr, name)
        # The header rule: the same refusals, word for word.
        rules = [(dict(fusion="max"), ["--fusion", "max"]),
                 (dict(fusion="weighted", head_weights=[0, 0, 0, 0]),
                  ["--fusion", "weighted", "--head-weights", "0,0,0,0"]),
                 (dict(gradients=f32(np.ones_like(base))), None)]
        for kw, cli in rules:
            with self.assertRaises(attnroll.AttnrollError) as ctx:
                self.client.explain(base, client_fusion="on", **kw)
            msg = ctx.exception.message
            self.assertTrue(msg.startswith("cannot fuse heads on the client: "), msg)
            if cli is not None:
                self.assertIn(msg, self.cli_error(base, cli + ["--client-fusion", "on"]))
        # One head: auto sends it as it is, in both clients.
        one = f32(nr.make_attention(rng, 2, 1, 6))
        self.assertFalse(self.client.explain(one).heads_fused_by_client)

    def test_the_native_library_loads_only_on_a_cpu_that_runs_it(self):
        haswell = ("flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 movbe popcnt xsave avx f16c "
                   "abm fma bmi1 avx2 bmi2 erms")
        sandy_bridge = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt xsave avx"
        self.assertTrue(native.cpu_runs_library(haswell, "x86_64"))
        self.assertFalse(native.cpu_runs_library(sandy_bridge, "x86_64"))  # SIGILL otherwise
        for missing in native.X86_64_V3_FLAGS:
            line = " ".join(f for f in haswell.split() if f != missing)
            self.assertFalse(native.cpu_runs_library(line, "x86_64"), missing)
        self.assertFalse(native.cpu_runs_library("processor\t: 0\n", "x86_64"))  # no flags line
        self.assertTrue(native.cpu_runs_library("", "aarch64"))
        with open("/proc/cpuinfo") as f:
            here = native.cpu_runs_library(f.read())
        self.assertEqual(here, native.cpu_runs_library())
        if os.environ.get("ATTNROLL_NATIVE_EXPECTED", "1") == "1":
            self.assertEqual(native.available(), here)

    def test_native_half_encoding_is_numpys_bit_for_bit(self):
        if not native.available():
            if os.environ.get("ATTNROLL_NATIVE_EXPECTED", "1") == "1":
                self.fail("attnroll/_native.so did not load from this build tree")
            self.skipTest("no native library in this tree (sanitizer build)")
        rng = np.random.default_rng(33)
        # Every finite half, the midpoints between neighbours (ties: to even) and
        # the floats just above them, normal values of every scale, subnormals,
        # overflow to infinity, signed zeros and infinities; 3 mod 8 values
        # left over for the scalar tail.
        h = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
        h = np.sort(h[np.isfinite(h)])
        mid = ((h[:-1].astype(np.float64) + h[1:]) / 2).astype(np.float32)
        scales = [np.float32(10.0 ** e) for e in range(-9, 6)]
        x = np.concatenate([h, mid, np.nextafter(mid, np.float32(np.inf)),
                            np.nextafter(mid, np.float32(-np.inf))]
                           + [rng.standard_normal(4096).astype(np.float32) * sc for sc in scales]
                           + [np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.996, 65520,
                                        1e-45, -3e-8, 7e4, -7e4], dtype=np.float32)])
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).view(np.uint16)
        got = native.encode_half(x)
        self.assertEqual(got.shape, x.shape)
        np.testing.assert_array_equal(got, want)
        # Through the wire encoder: the same bytes as numpy's cast.
        t = tensor_pb2.Tensor()
        tensors.encode_into(t, x[:1001].reshape(7, 11, 13), "fp16")
        self.assertEqual(t.data, x[:1001].astype("<f2").tobytes())
        self.assertIsNone(native.encode_half(x[::2]))       # not C order: numpy's path
        self.assertIsNone(native.encode_half(x.astype(np.float64)))
        # A library built before the half encoder: numpy encodes, the same bytes.
        saved, native._HALF = native._HALF, None
        try:
            self.assertIsNone(native.encode_half(x))
            t2 = tensor_pb2.Tensor()
            tensors.encode_into(t2, x[:1001].reshape(7, 11, 13), "fp16")
            self.assertEqual(t2.data, t.data)
        finally:
            native._HALF = saved

    def test_native_fusion_is_numpys_bit_for_bit_with_the_same_checks(self):
        if not native.available():
            if os.environ.get("ATTNROLL_NATIVE_EXPECTED", "1") == "1":
                self.fail("attnroll/_native.so did not load from this build tree")
            self.skipTest("no native library in this tree (sanitizer build)")
        self.assertIn(native.kernel_isa(), ("avx2", "portable"))
        rng = np.random.default_rng(31)

        def numpy_path(x, w, checks):
            saved, native._LIB = native._LIB, None
            try:
                return fusion.fuse_layer(x, w, 0, checks)
            finally:
                native._LIB = saved

        def header(valid=(), causal=False):
            from attnroll.v1 import pass_pb2
            return pass_pb2.PassHeader(layout=pass_pb2.Layout(
                num_layers=1, num_heads=7, num_tokens=9, batch_size=2, valid_lengths=valid,
                causal=causal))
        x = f32(nr.make_attention(rng, 2, 7, 9))           # [B = 2, H = 7, 9, 9] as one layer
        padded = x.copy()
        padded[1, :, :6, :6] /= padded[1, :, :6, :6].sum(-1, keepdims=True)
        padded[1, :, 6:, :] = np.nan                         # padding: never checked
        causal = f32(nr.make_causal_attention(rng, 2, 7, 9))
        weights = ([1.0] * 7, [1.0, 2.0, 0.0, 0.5, 3.0, 0.25, 1.0])
        for name, a, hdr in (("plain", x, header()), ("padded", padded, header((9, 6))),
                             ("causal", causal, header(causal=True))):
            checks = fusion.HeadChecks(hdr)
            for w in weights:
                out = np.full((2, 1, 9, 9), -1.0, dtype=np.float32)
                self.assertIs(fusion.fuse_native(a, w, checks, out), True, name)
                np.testing.assert_array_equal(out, numpy_path(a, w, checks), name)
                np.testing.assert_array_equal(fusion.fuse_layer(a, w, 0, checks), out, name)
        # Every kind of bad row is flagged (the exact check then names it, as numpy's path).
        checks = fusion.HeadChecks(header())
        bad = []
        b = x.copy(); b[1, 3, 2, 1] = -0.001; b[1, 2, 2, 1] += 0.001; bad.append(b)  # noqa: E702
        b = x.copy(); b[0, 6, 8, 0] += 0.002; bad.append(b)                           # noqa: E702
        b = x.copy(); b[0, 0, 0, 0] = np.nan; bad.append(b)                           # noqa: E702
        for b in bad:
            self.assertIs(fusion.fuse_native(b, weights[0], checks, np.empty((2, 1, 9, 9), np.float32)),
                          False)
        cb = causal.copy(); cb[1, 4, 3, 6] = 0.01; cb[1, 4, 3, 0] -= 0.01              # noqa: E702
        self.assertIs(fusion.fuse_native(cb, weights[0], fusion.HeadChecks(header(causal=True)),
                                         np.empty((2, 1, 9, 9), np.float32)), False)
        # Through explain, with and without the library: the same refusals, word for word.
        att = f32(nr.make_attention(rng, 3, 4, 8))
        broken = []
        b = att.copy(); b[2, 1, 5, 0] += 0.02; broken.append(b)                      # noqa: E702
        b = att.copy(); b[0, 3, 2, 1] = -0.001; b[0, 2, 2, 1] += 0.001; broken.append(b)  # noqa
        b = att.copy(); b[1, 0, 0, 0] = np.nan; broken.append(b)                      # noqa: E702
        for b in broken:
            msgs = []
            for lib in (native._LIB, None):
                saved, native._LIB = native._LIB, lib
                try:
                    with self.assertRaises(attnroll.AttnrollError) as ctx:
                        self.client.explain(b, client_fusion="on")
                finally:
                    native._LIB = saved
                msgs.append(ctx.exception.message)
            self.assertEqual(msgs[0], msgs[1])

    def test_fused_layers_go_whole_or_several_per_message_with_the_same_maps(self):
        rng = np.random.default_rng(32)
        att = f32(nr.make_attention(rng, 12, 6, 40))       # 6.4 KB per fused layer
        r = self.client.explain(att, rows=[0, 3])
        self.assertTrue(r.heads_fused_by_client)
        self.assertEqual(r.messages, 1)                    # the whole pass, one unary call
        hdr, p, _ = self.client._single_pass(att, None, dict(rows=[0, 3]), eager=False)
        self.assertEqual(p.layers_per_message(), 12)     # all of them in one LayerBatch
        saved_whole, client_module.WHOLE_PASS_BYTES = client_module.WHOLE_PASS_BYTES, 0
        saved = client_module.BATCH_BYTES
        try:
            batched = self.client.explain(att, rows=[0, 3])
            self.assertEqual(batched.messages, 2)          # header + one LayerBatch
            client_module.BATCH_BYTES = 1
            self.assertEqual(p.layers_per_message(), 1)
            one_by_one = self.client.explain(att, rows=[0, 3])
            self.assertEqual(one_by_one.messages, 13)
            client_module.BATCH_BYTES = 3 * (40 * 40 * 4 + 64)  # 3 layers (and their framing) per message
            self.assertEqual(p.layers_per_message(), 3)
            threes = self.client.explain(att, rows=[0, 3])
            self.assertEqual(threes.messages, 5)
        finally:
            client_module.BATCH_BYTES = saved
            client_module.WHOLE_PASS_BYTES = saved_whole
        # Within the server's max_message_bytes (GetServerInfo), leaving room for the request;
        # only the forms the server lists.
        cap, forms = self.client._wire_info()
        self.assertEqual(cap, self.client.server_info()["limits"]["max_message_bytes"])
        self.assertEqual(sorted(forms), ["header", "layer", "layers", "whole_pass"])
        self.assertEqual(p.layers_per_message(cap=1024 + 256 + 2 * (40 * 40 * 4 + 64)), 2)
        self.assertEqual(p.layers_per_message(cap=2048), 1)
        saved_info = self.client._server_wire
        try:
            # A pass over the server's max_message_bytes (77 KB over 64 KB) is not sent whole.
            self.client._server_wire = (64 << 10, forms)
            capped = self.client.explain(att, rows=[0, 3])
            self.assertEqual(capped.messages, 1 + 2)     # 9 layers per message fit in 64 KB
            # A server that lists no forms (older than the field) gets one layer per message.
            self.client._server_wire = (cap, frozenset())
            old_style = self.client.explain(att, rows=[0, 3])
            self.assertEqual(old_style.messages, 13)
        finally:
            self.client._server_wire = saved_info
        # Every head sent: one layer per message, as the C++ client.
        _, every, _ = self.client._single_pass(att, None, dict(rows=[0, 3], client_fusion="off"),
                                               eager=False)
        self.assertEqual(every.layers_per_message(), 1)
        self.assertEqual(self.client.explain(att, rows=[0, 3], client_fusion="off").messages, 13)
        for other in (batched, one_by_one, threes, capped, old_style):
            np.testing.assert_array_equal(r.maps[0], other.maps[0])
        self.assertMaps(r.maps[0], nr.rollout_maps(att, rows=(0, 3)))

    def test_whole_pass_refuses_a_bad_layer_before_sending_and_server_info_fallbacks(self):
        rng = np.random.default_rng(34)
        att = f32(nr.make_attention(rng, 5, 4, 12))
        bad = att.copy()
        bad[3, 2, 7, 1] += 0.05
        calls = []
        real = self.client._explain_whole
        self.client._explain_whole = lambda *a, **k: calls.append(1) or real(*a, **k)
        try:
            with self.assertRaises(attnroll.AttnrollError) as ctx:
                self.client.explain(bad, client_fusion="on")
            self.assertEqual(calls, [])                  # nothing was sent
            self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("layer 3, head 2, sequence 0, row 7", ctx.exception.message)
            self.assertEqual(self.client.explain(att, client_fusion="on").messages, 1)
            self.assertEqual(calls, [1])
        finally:
            self.client._explain_whole = real

        class Refused(grpc.RpcError):
            def __init__(self, code):
                self._code = code

            def code(self):
                return self._code

            def details(self):
                return "no"

        # A send that ends UNAVAILABLE: the same bytes are sent again (fused once).
        want = self.client.explain(att, client_fusion="on")
        with attnroll.Client(self.client.address, timeout=30, attempts=2) as two:
            sent = []
            real_two = two._explain_whole

            def flaky(request, **kw):
                sent.append(request)
                if len(sent) == 1:
                    raise Refused(grpc.StatusCode.UNAVAILABLE)
                return real_two(request, **kw)
            two._explain_whole = flaky
            again = two.explain(att, client_fusion="on")
        self.assertEqual((again.sends, again.messages, len(sent)), (2, 1, 2))
        self.assertIs(sent[0], sent[1])
        np.testing.assert_array_equal(again.maps[0], want.maps[0])

        # GetServerInfo failing: one layer per message; asked again only when it may answer later.
        saved_stub, saved_info = self.client._stub, self.client._server_wire
        asked = []

        class Stub:
            Explain = saved_stub.Explain

            def __init__(self, code):
                self.code = code

            def GetServerInfo(self, request, **kw):
                asked.append(kw.get("timeout"))
                raise Refused(self.code)
        try:
            want = self.client.explain(att, rows=[0, 4]).maps[0]
            for code, cached in ((grpc.StatusCode.UNAVAILABLE, False),
                                 (grpc.StatusCode.UNIMPLEMENTED, True)):
                self.client._stub, self.client._server_wire = Stub(code), None
                del asked[:]
                for _ in range(2):
                    r = self.client.explain(att, rows=[0, 4], timeout=30)
                    self.assertEqual(r.messages, 1 + 5)  # header + one layer per message
                    np.testing.assert_array_equal(r.maps[0], want)
                self.assertEqual(asked, [30] if cached else [30, 30], code)
        finally:
            self.client._stub, self.client._server_wire = saved_stub, saved_info

    def test_fusion_arithmetic(self):
        rng = np.random.default_rng(15)
        x = f32(nr.make_attention(rng, 1, 5, 6))[0][None]
        w = [1.0, 2.0, 0.0, 0.5, 3.0]
        got = fusion.fuse_layer(x, w, 0)
        want = np.einsum("h,bhij->bij", np.array(w) / sum(w), x.astype(np.float64))[:, None]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    # -- streaming ------------------------------------------------------------

    def test_stream_pass_layer_by_layer(self):
        rng = np.random.default_rng(16)
        att = f32(nr.make_attention(rng, 4, 3, 11))
        sent = []
        with self.client.stream_pass(4, prefix_tokens=1, on_sent=sent.append) as p:
            for layer in att:
                p.send(layer)
            r = p.finish()
        self.assertTrue(r.heads_fused_by_client)
        self.assertEqual(sent, [0, 1, 2, 3])
        self.assertMaps(r.maps[0], nr.rollout_maps(att, prefix=1))
        # Too few layers: the server's refusal, raised by finish().
        p = self.client.stream_pass(4)
        p.send(att[0])
        with self.assertRaises(attnroll.AttnrollError) as ctx:
            p.finish()
        self.assertEqual(ctx.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        # A bad head is refused before it leaves, and the call is cancelled.
        bad = att.copy()
        bad[1, 0, 0, 0] += 0.5
        p = self.client.stream_pass(4)
        p.send(bad[0])
        with self.assertRaises(attnroll.AttnrollError) as ctx:
            p.send(bad[1])
        self.assertTrue(ctx.exception.message.startswith("attention (layer 1, head 0, sequence 0,"
                                                         " row 0)"), ctx.exception.message)

    def test_help_reads(self):
        import pydoc
        text = pydoc.render_doc(attnroll.Client, renderer=pydoc.plaintext)
        for word in ("explain", "explain_pair", "audit", "compare", "stream_pass", "tls", "token"):
            self.assertIn(word, text)


# -- TLS and tokens, against a gRPC server of our own ------------------------


class _Recorder(attnroll_pb2_grpc.AttnrollServiceServicer):
    def __init__(self):
        self.metadata = []

    def GetServerInfo(self, request, context):
        self.metadata.append(dict(context.invocation_metadata()))
        return attnroll_pb2.ServerInfo(version="recorder")


class CredentialsTest(unittest.TestCase):
    """Client(tls=..., token=...): what reaches a server (attnroll-server's own
    TLS and token checks are not exercised here)."""

    def serve(self, creds=None):
        from concurrent import futures
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        rec = _Recorder()
        attnroll_pb2_grpc.add_AttnrollServiceServicer_to_server(rec, server)
        port = (server.add_secure_port("127.0.0.1:0", creds) if creds
                else server.add_insecure_port("127.0.0.1:0"))
        server.start()
        self.addCleanup(server.stop, None)
        return port, rec

    def test_token_on_plain_text(self):
        port, rec = self.serve()
        with attnroll.Client("127.0.0.1:%d" % port, token="s3cret") as c:
            self.assertEqual(c.server_info()["version"], "recorder")
        self.assertEqual(rec.metadata[0].get("authorization"), "Bearer s3cret")
        with attnroll.Client("127.0.0.1:%d" % port) as c:
            c.server_info()
        self.assertNotIn("authorization", rec.metadata[1])

    def test_tls_with_token(self):
        tmp = tempfile.mkdtemp(prefix="attnroll_tls_")
        self.addCleanup(subprocess.run, ["rm", "-rf", tmp])
        key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", crt, "-days", "1", "-subj", "/CN=attnroll-test",
                        "-addext", "subjectAltName=DNS:attnroll-test"],
                       check=True, capture_output=True)
        with open(key, "rb") as f:
            k = f.read()
        with open(crt, "rb") as f:
            cert = f.read()
        port, rec = self.serve(grpc.ssl_server_credentials([(k, cert)]))
        tls = dict(root_certificates=crt, server_name="attnroll-test")
        with attnroll.Client("127.0.0.1:%d" % port, tls=tls, token="t0k") as c:
            self.assertEqual(c.server_info()["version"], "recorder")
        self.assertEqual(rec.metadata[0].get("authorization"), "Bearer t0k")
        # Without the right root the handshake fails: UNAVAILABLE, typed.
        with attnroll.Client("127.0.0.1:%d" % port, tls=True, timeout=5) as c:
            with self.assertRaises(attnroll.AttnrollError) as ctx:
                c.server_info()
            self.assertEqual(ctx.exception.code, grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    e2e_harness.main()
