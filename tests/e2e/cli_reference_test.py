#!/usr/bin/python3
"""End-to-end test: the `attnroll` CLI against a real `attnroll-server`, checked
against the independent numpy reference of numpy_reference.py (plain rollout:
fusion, residual and renormalisation, layer ranges, per-layer output, rows,
prefix, grid, scaling, padding, batches, fp16/bf16 wire).

Run:
    /usr/bin/python3 tests/e2e/cli_reference_test.py --bin-dir BUILD_DIR [unittest args]
or set ATTNROLL_BIN_DIR.  Uses only the standard library and numpy.

The conventions the reference encodes are stated in numpy_reference.py; this
suite checks the reference itself against hand-derived facts and a second
formulation (ReferenceSelfTest, no binaries needed), then the server and the
CLI against it.
"""

import json
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)

# --------------------------------------------------------------------------
# Self-test of the reference (no binaries needed).
# --------------------------------------------------------------------------


class ReferenceSelfTest(unittest.TestCase):
    """Checks the reference against hand-derived facts and a second
    formulation (row vector pushed through the layers)."""

    def test_row_vector_formulation(self):
        rng = np.random.default_rng(1)
        att = nr.make_attention(rng, 5, 3, 9).astype(np.float64)
        got = nr.rollout_maps(att, rows=(0, 4))
        for k, i in enumerate((0, 4)):
            v = np.zeros(9)
            v[i] = 1.0
            for l in reversed(range(5)):  # e_i^T At_L ... At_1
                At = 0.5 * att[l].mean(0) + 0.5 * np.eye(9)
                At /= At.sum(1, keepdims=True)
                v = v @ At
            np.testing.assert_allclose(got[k], v, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-12)

    def test_hand_computed(self):
        A = np.array([[0.2, 0.8], [0.6, 0.4]])
        att = np.stack([A[None], A[None]])  # [L=2, H=1, 2, 2]
        # At = 0.5 A + 0.5 I = [[.6, .4], [.3, .7]]; R = At At.
        np.testing.assert_allclose(nr.rollout_maps(att, rows=(0, 1)),
                                   [[0.48, 0.52], [0.39, 0.61]], rtol=1e-12)
        # weighted w = [2], no renorm, a = 0.5: At = A + 0.5 I, one layer.
        np.testing.assert_allclose(
            nr.rollout_maps(att[:1], fusion="weighted", weights=[2.0], renorm=False,
                              rows=(0, 1)),
            [[0.7, 0.8], [0.6, 0.9]], rtol=1e-12)
        # rows mean, prefix 1, scale none.
        np.testing.assert_allclose(nr.rollout_maps(att, rows="mean", prefix=1),
                                   [[(0.52 + 0.61) / 2]], rtol=1e-12)

    def test_order_matters(self):
        # Two non-commuting layers: R = At_2 At_1, not At_1 At_2.
        A1 = np.array([[[1.0, 0.0], [1.0, 0.0]]])
        A2 = np.array([[[0.0, 1.0], [0.0, 1.0]]])
        att = np.stack([A1, A2])  # [L=2, H=1, 2, 2]
        got = nr.rollout_maps(att, residual=0.0, rows=(0, 1))
        np.testing.assert_allclose(got, A2[0] @ A1[0])
        self.assertFalse(np.allclose(A2[0] @ A1[0], A1[0] @ A2[0]))

    def test_layer_range_and_per_layer(self):
        rng = np.random.default_rng(2)
        att = nr.make_attention(rng, 4, 2, 6)
        pl = nr.rollout_maps(att, layers=(1, 2), per_layer=True, rows=(0, 1))
        self.assertEqual(pl.shape, (2, 2, 6))
        only1 = nr.rollout_maps(att[1:2], rows=(0, 1))
        np.testing.assert_allclose(pl[0], only1)
        np.testing.assert_allclose(pl[1], nr.rollout_maps(att[1:3], rows=(0, 1)))

    def test_padding_equals_cropped(self):
        rng = np.random.default_rng(3)
        att = nr.make_attention(rng, 3, 2, 8, batch=2, valid_lengths=(8, 5))
        np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(att[1, :, :, :5, 5:], 0.0)
        got = nr.rollout_maps(att, prefix=1, valid_lengths=(8, 5), scale="max")
        self.assertEqual(got.shape, (2, 1, 7))
        crop = nr.rollout_maps(att[1, :, :, :5, :5], prefix=1, scale="max")
        np.testing.assert_allclose(got[1, :, :4], crop)
        np.testing.assert_array_equal(got[1, :, 4:], 0.0)

    def test_scalings(self):
        x = np.array([1.0, 3.0, 2.0])
        np.testing.assert_allclose(nr.scale_map(x, "max"), [1 / 3, 1, 2 / 3])
        np.testing.assert_allclose(nr.scale_map(x, "minmax"), [0, 1, 0.5])
        np.testing.assert_allclose(nr.scale_map(x, "sum"), [1 / 6, 3 / 6, 2 / 6])
        np.testing.assert_array_equal(nr.scale_map(np.full(3, 0.2), "minmax"), 0.0)

    def test_bf16_rounding(self):
        x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9,
                      1.0 + 2 ** -8 + 2 ** -9], dtype=np.float32)
        # 1+2^-8 is halfway between 1 and 1+2^-7: ties to even -> 1.
        # 1+3*2^-8 is halfway between 1+2^-7 and 1+2^-6: ties to even -> 1+2^-6.
        np.testing.assert_array_equal(
            nr.round_bf16(x), np.array([1.0, 1.0, 1.0 + 2 ** -6, 1.0, 1.0 + 2 ** -7],
                                    dtype=np.float32))
        y = np.random.default_rng(4).random(1000).astype(np.float32)
        r = nr.round_bf16(y)
        np.testing.assert_array_equal(r.view(np.uint32) & 0xFFFF, 0)
        self.assertLessEqual(np.max(np.abs(r - y) / y), 2.0 ** -8)


# --------------------------------------------------------------------------
# The server and the CLI.
# --------------------------------------------------------------------------


class CliReferenceTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_e2e_"

    # -- helpers ------------------------------------------------------------

    def run_case(self, name, att, opts, ref_kwargs, wire="fp32", extra=()):
        """Run `explain` and compare its output with the reference.  `wire`
        selects both the --wire flag (omitted for fp32, the default) and the
        rounding applied to the reference's input."""
        inp = self._write(name + "_in", att)
        out = os.path.join(self.tmp, name + "_out.npy")
        args = ["explain", "--attention", inp, "--out", out] + list(opts)
        if np.ndim(att) == 5:
            args += ["--layout", "blhnn"]  # a 5-D array is never guessed
        if wire != "fp32":
            args += ["--wire", wire]
            if "--client-fusion" not in opts:
                # The reference rounds every head to the wire dtype; fused on
                # the client, the mean would be rounded instead
                # (test_client_fusion_sends_one_head_per_layer checks that path).
                args += ["--client-fusion", "off"]
        args += list(extra)
        res = self.cli_ok(name, args)
        got = self.load_float32(out, name)
        rtol, atol = (1e-4, 1e-6) if wire == "fp32" else (1e-3, 1e-5)
        want = nr.rollout_maps(nr.wire_round(att, wire), **ref_kwargs)
        self.assertEqual(got.shape, want.shape, name)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                   err_msg="case %s: %s" % (name, " ".join(args)))
        return got, res

    def expect_invalid(self, name, att, opts):
        inp = self._write(name + "_in", att)
        out = os.path.join(self.tmp, name + "_out.npy")
        layout = ["--layout", "blhnn"] if np.ndim(att) == 5 else []
        self.cli_invalid(name, ["explain", "--attention", inp, "--out", out] + layout + list(opts))

    # -- the server is up ------------------------------------------------------

    def test_info(self):
        res = self.cli("info")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertTrue(res.stdout.strip(), "info printed nothing")

    def test_json_summary(self):
        rng = np.random.default_rng(100)
        att = nr.make_attention(rng, 3, 2, 11)
        got, res = self.run_case("json", att, ["--prefix", "1", "--rows", "0,3", "--json"],
                                 dict(prefix=1, rows=(0, 3)))
        try:
            obj = json.loads(res.stdout)
        except ValueError as e:
            self.fail("--json stdout is not one JSON object (%s):\n%s" % (e, res.stdout))
        self.assertIsInstance(obj, dict)
        self.assertIn("shape", obj)
        self.assertIn("server_version", obj)
        self.assertEqual(list(obj["shape"]), list(got.shape))

    def test_client_fusion_sends_one_head_per_layer(self):
        # Mean fusion allows fusing on the client (the default, auto): H times
        # fewer bytes and the same map; off sends every head; on where the
        # analysis needs the heads is refused before anything is sent.
        rng = np.random.default_rng(101)
        att = nr.make_attention(rng, 4, 6, 12)
        want = nr.rollout_maps(att, rows=(0, 5))
        sent = {}
        for mode in ("auto", "off", "on"):
            got, res = self.run_case("fusion_" + mode, att,
                                     ["--rows", "0,5", "--json", "--client-fusion", mode],
                                     dict(rows=(0, 5)))
            obj = json.loads(res.stdout)
            self.assertEqual(obj["heads_fused_on_client"], mode != "off", mode)
            sent[mode] = obj["bytes_sent"]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=mode)
        self.assertEqual(sent["off"], 4 * 6 * 12 * 12 * 4)
        self.assertEqual(sent["auto"], 4 * 1 * 12 * 12 * 4)
        self.assertEqual(sent["on"], sent["auto"])
        # At fp16 and bf16 the fused mean is rounded, once, to the wire dtype.
        for wire in ("fp16", "bf16"):
            inp = self._write("fusion_wire_in", att)
            out = os.path.join(self.tmp, "fusion_wire_out.npy")
            res = self.cli_ok("fusion_" + wire, ["explain", "--attention", inp, "--out", out,
                                                 "--rows", "0,5", "--wire", wire, "--json"])
            self.assertTrue(json.loads(res.stdout)["heads_fused_on_client"])
            self.assertEqual(json.loads(res.stdout)["bytes_sent"], 4 * 12 * 12 * 2)
            fused = nr.wire_round(att.astype(np.float32).mean(1, keepdims=True), wire)
            np.testing.assert_allclose(self.load_float32(out, wire),
                                       nr.rollout_maps(fused, rows=(0, 5)),
                                       rtol=1e-3, atol=1e-5, err_msg=wire)
        _, res = self.run_case("fusion_max_auto", att, ["--fusion", "max", "--json"],
                               dict(fusion="max"))
        self.assertFalse(json.loads(res.stdout)["heads_fused_on_client"])
        inp = self._write("fusion_max_on_in", att)
        res = self.cli_invalid("fusion_max_on", ["explain", "--attention", inp, "--out",
                                                 os.path.join(self.tmp, "x.npy"), "--fusion", "max",
                                                 "--client-fusion", "on"])
        self.assertIn("cannot fuse heads on the client: analyses[0].rollout.fusion", res.stderr)

    def test_input_forms_are_never_guessed(self):
        # One 12-layer batched capture in every form a capture loop produces:
        # [B, L, H, n, n], torch.stack's [L, B, H, n, n], np.savez(f, *layers)
        # and a directory of per-layer files (layer_10 after layer_9). Each is
        # read as what it is, and says so; a 5-D array without --layout is
        # refused instead of guessed.
        rng = np.random.default_rng(400)
        L, H, n, B = 12, 2, 6, 2
        att = nr.make_attention(rng, L, H, n, batch=B)  # [B, L, H, n, n]
        want = nr.rollout_maps(att, rows=(0, 3))
        blhnn = self._write("forms_blhnn", att)
        lbhnn = self._write("forms_lbhnn", np.ascontiguousarray(att.transpose(1, 0, 2, 3, 4)))
        npz = os.path.join(self.tmp, "forms.npz")
        np.savez(npz, *[att[:, l] for l in range(L)])
        layer_dir = os.path.join(self.tmp, "forms_dir")
        os.makedirs(layer_dir)
        for l in range(L):
            np.save(os.path.join(layer_dir, "layer_%d.npy" % l), att[:, l])
        for name, path, extra, how in (
                ("blhnn", blhnn, ["--layout", "blhnn"], "one array [2, 12, 2, 6, 6], blhnn"),
                ("lbhnn", lbhnn, ["--layout", "lbhnn"], "one array [12, 2, 2, 6, 6], lbhnn"),
                ("npz", npz, [], "12 per-layer arrays [2, 2, 6, 6]"),
                ("dir", layer_dir, [], "12 per-layer arrays [2, 2, 6, 6]")):
            out = os.path.join(self.tmp, "forms_%s_out.npy" % name)
            res = self.cli_ok(name, ["explain", "--attention", path, "--out", out, "--rows", "0,3"] + extra)
            self.assertIn("L=12 H=2 n=6 B=2 (%s)" % how, res.stdout, name)
            np.testing.assert_allclose(np.load(out), want, rtol=1e-4, atol=1e-6, err_msg=name)
        # One unbatched image: per-layer [H, n, n] arrays give [k, n] maps.
        single = os.path.join(self.tmp, "forms_single.npz")
        np.savez(single, *[att[0, l] for l in range(L)])
        out = os.path.join(self.tmp, "forms_single_out.npy")
        res = self.cli_ok("single", ["explain", "--attention", single, "--out", out, "--json"])
        self.assertEqual(json.loads(res.stdout)["input"], "L=12 H=2 n=6 B=1 (12 per-layer arrays [2, 6, 6])")
        np.testing.assert_allclose(np.load(out), nr.rollout_maps(att[0]), rtol=1e-4, atol=1e-6)
        # Gradients and value norms follow the attention's form.
        grad = nr.make_gradient(rng, att.shape)
        gnpz = os.path.join(self.tmp, "forms_grad.npz")
        np.savez(gnpz, *[grad[:, l] for l in range(L)])
        vn = rng.uniform(0.5, 2.0, (B, L, H, n)).astype(np.float32)
        vnpz = os.path.join(self.tmp, "forms_vn.npz")
        np.savez(vnpz, *[vn[:, l] for l in range(L)])
        out = os.path.join(self.tmp, "forms_grad_out.npy")
        self.cli_ok("grad", ["explain", "--attention", npz, "--gradient", gnpz, "--method", "grad-rollout",
                             "--value-norms", vnpz, "--out", out])
        np.testing.assert_allclose(np.load(out), nr.rollout_maps(att, grad=grad, rule="chefer", value_norms=vn),
                                   rtol=1e-4, atol=1e-6)
        # Refused, with what to say instead.
        res = self.cli("explain", "--attention", blhnn, "--out", out)
        self.assertEqual(res.returncode, 1)
        self.assertIn("a 5-D array [2, 12, 2, 6, 6] is ambiguous: say --layout blhnn", res.stderr)
        res = self.cli("explain", "--attention", self._write("forms_4d", att[0]), "--layout", "blhnn",
                       "--out", out)
        self.assertEqual(res.returncode, 1)
        self.assertIn("--layout is for 5-D arrays", res.stderr)
        res = self.cli("explain", "--attention", npz, "--gradient", blhnn, "--method", "grad-rollout",
                       "--out", out)
        self.assertEqual(res.returncode, 1)
        self.assertIn("--gradient", res.stderr)
        res = self.cli("explain", "--attention", blhnn, "--layout", "bhlnn", "--out", out)
        self.assertEqual(res.returncode, 2)

    def test_float16_npy_input(self):
        # A float16 .npy (what torch users save from half models) is read as is.
        att = nr.make_attention(np.random.default_rng(300), 3, 2, 16).astype(np.float16)
        inp = self._write("fp16_npy_in", att)
        out = os.path.join(self.tmp, "fp16_npy_out.npy")
        res = self.cli("explain", "--attention", inp, "--out", out, "--rows", "0,5",
                       "--wire", "fp16")
        self.assertEqual(res.returncode, 0, res.stderr)
        want = nr.rollout_maps(att.astype(np.float32), rows=(0, 5))
        np.testing.assert_allclose(np.load(out), want, rtol=1e-3, atol=1e-5)

    def test_cost_model_picks_row_path_for_few_rows_and_chain_for_per_layer(self):
        att = nr.make_attention(np.random.default_rng(301), 4, 2, 100)
        paths = {}
        for name, opts in (("one_row", ["--rows", "0"]),
                           ("per_layer", ["--rows", "0", "--per-layer"])):
            _, res = self.run_case("path_" + name, att, opts + ["--json"],
                                   dict(rows=(0,), per_layer=name == "per_layer"))
            paths[name] = json.loads(res.stdout)["path"]
        self.assertEqual(paths, {"one_row": "row", "per_layer": "chain"})

    # -- bad inputs ------------------------------------------------------------

    def test_invalid_row_index(self):
        att = nr.make_attention(np.random.default_rng(200), 2, 2, 10)
        self.expect_invalid("bad_row", att, ["--rows", "10"])

    def test_invalid_grid(self):
        att = nr.make_attention(np.random.default_rng(201), 2, 2, 17)
        # n - P = 15, 4x4 = 16.
        self.expect_invalid("bad_grid", att, ["--prefix", "2", "--grid", "4x4"])

    def test_invalid_head_weights_length(self):
        att = nr.make_attention(np.random.default_rng(202), 2, 3, 8)
        self.expect_invalid("bad_weights", att,
                            ["--fusion", "weighted", "--head-weights", "0.5,0.25,0.125,0.125"])

    def test_invalid_negative_entry(self):
        att = nr.make_attention(np.random.default_rng(203), 2, 2, 8)
        # Row still sums to 1; only the sign is wrong.
        att[1, 0, 3, 2] = -0.05
        att[1, 0, 3, 4] += np.float32(1.0 - att[1, 0, 3].sum(dtype=np.float64))
        self.assertLess(abs(float(att[1, 0, 3].sum(dtype=np.float64)) - 1.0), 1e-6)
        # Caught by the client as it fuses the heads (auto), and by the server
        # when every head is sent.
        self.expect_invalid("bad_negative", att, [])
        self.expect_invalid("bad_negative_all_heads", att, ["--client-fusion", "off"])

    def test_invalid_nan(self):
        att = nr.make_attention(np.random.default_rng(204), 2, 2, 8)
        att[0, 1, 5, 6] = np.nan
        self.expect_invalid("bad_nan", att, [])

    def test_invalid_not_stochastic(self):
        att = nr.make_attention(np.random.default_rng(205), 2, 2, 8)
        att[1, 1, 2, :] *= 1.5
        self.expect_invalid("bad_rowsum", att, [])


# Option combinations compared with the reference.  Each entry:
# (name, seed, shape (L, H, n) [, batch], cli options, reference kwargs, wire,
#  valid lengths for generation).
_CASES = [
    ("default", dict(L=4, H=3, n=12), [], {}),
    ("method_rollout_wire_fp32_explicit", dict(L=4, H=3, n=12),
     ["--method", "rollout", "--wire", "fp32"], {}),
    ("fusion_mean_explicit", dict(L=4, H=3, n=12), ["--fusion", "mean", "--residual", "0.5"],
     dict(fusion="mean", residual=0.5)),
    ("fusion_mean_every_head_sent", dict(L=4, H=3, n=12), ["--client-fusion", "off"], {}),
    ("fusion_weighted_every_head_sent", dict(L=3, H=4, n=10),
     ["--fusion", "weighted", "--head-weights", "2.5,0.25,1,0.125", "--client-fusion", "off"],
     dict(fusion="weighted", weights=[2.5, 0.25, 1.0, 0.125])),
    ("fusion_max", dict(L=4, H=3, n=12), ["--fusion", "max"], dict(fusion="max")),
    ("fusion_min", dict(L=4, H=3, n=12), ["--fusion", "min"], dict(fusion="min")),
    ("fusion_weighted", dict(L=4, H=3, n=12),
     ["--fusion", "weighted", "--head-weights", "0.7,0.2,0.1"],
     dict(fusion="weighted", weights=[0.7, 0.2, 0.1])),
    ("fusion_weighted_uneven_unnormalised", dict(L=3, H=4, n=10),
     ["--fusion", "weighted", "--head-weights", "2.5,0.25,1,0.125", "--rows", "0,5"],
     dict(fusion="weighted", weights=[2.5, 0.25, 1.0, 0.125], rows=(0, 5))),
    ("weighted_no_renorm", dict(L=3, H=2, n=9),
     ["--fusion", "weighted", "--head-weights", "1.5,0.25", "--no-renorm", "--rows", "0,1,2"],
     dict(fusion="weighted", weights=[1.5, 0.25], renorm=False, rows=(0, 1, 2))),
    ("residual_0", dict(L=4, H=3, n=12), ["--residual", "0", "--rows", "0,7"],
     dict(residual=0.0, rows=(0, 7))),
    ("residual_0_3", dict(L=4, H=3, n=12), ["--residual", "0.3"], dict(residual=0.3)),
    ("max_no_renorm", dict(L=4, H=3, n=12), ["--fusion", "max", "--no-renorm"],
     dict(fusion="max", renorm=False)),
    ("min_no_renorm_res0_3", dict(L=3, H=3, n=10),
     ["--fusion", "min", "--no-renorm", "--residual", "0.3", "--rows", "mean"],
     dict(fusion="min", renorm=False, residual=0.3, rows="mean")),
    ("layer_range", dict(L=6, H=2, n=10), ["--layers", "1:4", "--rows", "0,9"],
     dict(layers=(1, 4), rows=(0, 9))),
    ("layer_single", dict(L=5, H=2, n=10), ["--layers", "3:3"], dict(layers=(3, 3))),
    ("per_layer", dict(L=5, H=2, n=10), ["--per-layer", "--rows", "0,2"],
     dict(per_layer=True, rows=(0, 2))),
    ("per_layer_range", dict(L=6, H=3, n=10),
     ["--per-layer", "--layers", "2:4", "--fusion", "max"],
     dict(per_layer=True, layers=(2, 4), fusion="max")),
    ("rows_several", dict(L=4, H=3, n=14), ["--rows", "13,0,6"],
     dict(rows=(13, 0, 6))),
    ("rows_mean", dict(L=4, H=3, n=14), ["--rows", "mean"], dict(rows="mean")),
    ("prefix1", dict(L=4, H=3, n=13), ["--prefix", "1", "--rows", "0,1"],
     dict(prefix=1, rows=(0, 1))),
    ("prefix2_grid3x5", dict(L=4, H=3, n=17), ["--prefix", "2", "--grid", "3x5"],
     dict(prefix=2, grid=(3, 5))),
    ("prefix2_grid5x3_rows_scale_max", dict(L=3, H=2, n=17),
     ["--prefix", "2", "--grid", "5x3", "--rows", "0,1,16", "--scale", "max"],
     dict(prefix=2, grid=(5, 3), rows=(0, 1, 16), scale="max")),
    ("scale_none", dict(L=4, H=3, n=12), ["--scale", "none", "--prefix", "1"],
     dict(scale="none", prefix=1)),
    ("scale_max", dict(L=4, H=3, n=12), ["--scale", "max", "--prefix", "1"],
     dict(scale="max", prefix=1)),
    ("scale_minmax", dict(L=4, H=3, n=12), ["--scale", "minmax", "--prefix", "1", "--rows", "0,4"],
     dict(scale="minmax", prefix=1, rows=(0, 4))),
    ("scale_sum", dict(L=4, H=3, n=12), ["--scale", "sum", "--prefix", "1"],
     dict(scale="sum", prefix=1)),
    ("scale_minmax_per_layer_mean", dict(L=3, H=2, n=11),
     ["--scale", "minmax", "--per-layer", "--rows", "mean", "--prefix", "1"],
     dict(scale="minmax", per_layer=True, rows="mean", prefix=1)),
    ("wire_fp16", dict(L=4, H=3, n=16), ["--rows", "0,3"], dict(rows=(0, 3)), "fp16"),
    ("wire_fp16_grid", dict(L=3, H=2, n=17), ["--prefix", "2", "--grid", "3x5", "--scale", "max"],
     dict(prefix=2, grid=(3, 5), scale="max"), "fp16"),
    ("wire_bf16", dict(L=4, H=3, n=16), ["--rows", "0,3"], dict(rows=(0, 3)), "bf16"),
    ("wire_bf16_per_layer_max", dict(L=3, H=3, n=12), ["--per-layer", "--fusion", "max"],
     dict(per_layer=True, fusion="max"), "bf16"),
    ("batch1_5d", dict(L=3, H=2, n=9, B=1), ["--rows", "0,4"], dict(rows=(0, 4))),
    ("batch3_padded", dict(L=3, H=2, n=12, B=3, valid=(12, 7, 9)),
     ["--valid-lengths", "12,7,9", "--prefix", "1", "--rows", "0,3"],
     dict(valid_lengths=(12, 7, 9), prefix=1, rows=(0, 3))),
    ("batch3_padded_mean_minmax", dict(L=3, H=2, n=12, B=3, valid=(5, 12, 8)),
     ["--valid-lengths", "5,12,8", "--rows", "mean", "--scale", "minmax"],
     dict(valid_lengths=(5, 12, 8), rows="mean", scale="minmax")),
    ("batch3_padded_per_layer_range", dict(L=4, H=2, n=12, B=3, valid=(10, 6, 12)),
     ["--valid-lengths", "10,6,12", "--per-layer", "--layers", "1:3", "--prefix", "2",
      "--scale", "sum"],
     dict(valid_lengths=(10, 6, 12), per_layer=True, layers=(1, 3), prefix=2, scale="sum")),
    ("batch3_padded_fp16", dict(L=3, H=2, n=12, B=3, valid=(11, 4, 12)),
     ["--valid-lengths", "11,4,12", "--fusion", "max"],
     dict(valid_lengths=(11, 4, 12), fusion="max"), "fp16"),
    ("vit_like", dict(L=4, H=3, n=50), ["--prefix", "1", "--grid", "7x7"],
     dict(prefix=1, grid=(7, 7))),
    ("vit_like_scaled_rows", dict(L=4, H=3, n=50),
     ["--prefix", "1", "--grid", "7x7", "--rows", "0,1,25", "--scale", "max"],
     dict(prefix=1, grid=(7, 7), rows=(0, 1, 25), scale="max")),
    # Few rows, larger n: the server's row-only (vector) read-out ...
    ("row_only_path", dict(L=6, H=4, n=120), ["--rows", "0"], dict(rows=(0,))),
    ("row_only_path_last_row_weighted", dict(L=6, H=4, n=120),
     ["--rows", "119", "--fusion", "weighted", "--head-weights", "0.1,0.6,0.2,0.4",
      "--prefix", "1"],
     dict(rows=(119,), fusion="weighted", weights=[0.1, 0.6, 0.2, 0.4], prefix=1)),
    # ... and the full chain for the same shape.
    ("full_chain_per_layer", dict(L=6, H=4, n=120), ["--rows", "0", "--per-layer"],
     dict(rows=(0,), per_layer=True)),
    ("full_chain_rows_mean", dict(L=6, H=4, n=120), ["--rows", "mean"], dict(rows="mean")),
]


def _make_case_test(index, name, shape, opts, ref_kwargs, wire="fp32"):
    def test(self):
        rng = np.random.default_rng(1000 + index)
        att = nr.make_attention(rng, shape["L"], shape["H"], shape["n"],
                                batch=shape.get("B"), valid_lengths=shape.get("valid"))
        self.run_case(name, att, opts, ref_kwargs, wire=wire)
    return test


e2e_harness.add_case_tests(CliReferenceTest, _CASES, _make_case_test)


if __name__ == "__main__":
    e2e_harness.main()
