#!/usr/bin/python3
"""End-to-end test: the `attnroll` CLI against a real `attnroll-server`, checked
against an independent numpy reference of the rollout conventions of
design.md section 4.

Run:
    /usr/bin/python3 tests/e2e/cli_reference_test.py --bin-dir BUILD_DIR [unittest args]
or set ATTNROLL_BIN_DIR.  Uses only the standard library and numpy.

The reference below is deliberately written the slow, obvious way (float64,
explicit loops over sequences and layers, full n x n chain) so that it shares
no structure with the server's one-pass row read-out.

Conventions the reference encodes (design.md section 4 and the CLI brief):
  * fusion: mean / max / min over heads; weighted = sum_h w_h A[h] (weights
    used as given, not normalised).
  * At = (1 - a) F + a I (default a = 0.5), then every row divided by its row
    sum unless --no-renorm.
  * R over the selected layer range [first, last]: R_first = At_first,
    R_l = At_l @ R_{l-1}; --per-layer returns every R_l of the range.
  * read-out: rows (default row 0) or the mean over all valid query rows;
    drop the first P columns; reshape to (h, w) if --grid is given.
  * scaling after dropping the prefix, per map: none, max (x / max),
    minmax ((x - min) / (max - min), all zero if max == min), sum (x / sum).
  * padding (--valid-lengths): sequence b is cropped to its first m_b tokens
    before any math; its map covers tokens P..m_b-1 and is zero-filled from
    m_b - P up to n - P.  Scaling is applied to the valid part only, before
    the zero fill (the fill is not part of the map).
  * output shape: [k, n-P] (or [k, h, w]); [Lsel, ...] with --per-layer;
    a leading B axis when the input is 5-D (even for B == 1).
"""

import json
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)

# --------------------------------------------------------------------------
# Input generation.
# --------------------------------------------------------------------------


def _softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def make_attention(rng, L, H, n, batch=None, valid_lengths=None):
    """Row-stochastic float32 attention [L, H, n, n] (or [B, L, H, n, n]).

    Rows are softmaxes of Gaussian logits scaled by a per-(layer, head)
    temperature in [1, 6], so most rows are peaked.  With valid_lengths the
    top-left m_b x m_b block of sequence b is row-stochastic, padded columns
    of valid rows are exactly 0, and padded rows hold arbitrary
    row-stochastic junk over all n columns.
    """
    B = 1 if batch is None else batch
    out = np.zeros((B, L, H, n, n), dtype=np.float64)
    for b in range(B):
        m = n if valid_lengths is None else valid_lengths[b]
        for l in range(L):
            for h in range(H):
                temp = rng.uniform(1.0, 6.0)
                out[b, l, h, :m, :m] = _softmax(temp * rng.standard_normal((m, m)))
                if m < n:
                    junk = _softmax(3.0 * rng.standard_normal((n - m, n)))
                    out[b, l, h, m:, :] = junk
    out = out.astype(np.float32)
    return out[0] if batch is None else out


def round_fp16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def round_bf16(x):
    """Round-to-nearest-even of the fp32 bit pattern to its top 16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


# --------------------------------------------------------------------------
# The reference.
# --------------------------------------------------------------------------


def _fuse(A, fusion, weights):
    """A: [H, m, m] float64 -> [m, m]."""
    if fusion == "mean":
        return A.mean(axis=0)
    if fusion == "max":
        return A.max(axis=0)
    if fusion == "min":
        return A.min(axis=0)
    if fusion == "weighted":
        w = np.asarray(weights, dtype=A.dtype)
        assert w.shape == (A.shape[0],)
        out = np.zeros(A.shape[1:], dtype=A.dtype)
        for h in range(A.shape[0]):
            out += w[h] * A[h]
        return out
    raise ValueError(fusion)


def _scale(x, scale):
    """x: 1-D map (prefix already dropped, padding not included)."""
    if scale == "none":
        return x
    if scale == "max":
        return x / x.max()
    if scale == "minmax":
        lo, hi = x.min(), x.max()
        if hi == lo:
            return np.zeros_like(x)
        return (x - lo) / (hi - lo)
    if scale == "sum":
        return x / x.sum()
    raise ValueError(scale)


def reference_rollout(att, fusion="mean", weights=None, residual=0.5,
                      renorm=True, layers=None, per_layer=False, rows=(0,),
                      prefix=0, grid=None, scale="none", valid_lengths=None,
                      dtype=np.float64):
    """Rollout read-out of att ([L,H,n,n] or [B,L,H,n,n]); see module doc.
    dtype is the arithmetic type (float64 for the reference; float32 only to
    check that the tolerances leave room for fp32 arithmetic)."""
    att = np.asarray(att)
    batched = att.ndim == 5
    if not batched:
        att = att[None]
    B, L, H, n, _ = att.shape
    first, last = (0, L - 1) if layers is None else layers
    outs = []
    for b in range(B):
        m = n if valid_lengths is None else int(valid_lengths[b])
        a = att[b, :, :, :m, :m].astype(dtype)
        eye = np.eye(m, dtype=dtype)
        chain = []
        R = None
        for l in range(first, last + 1):
            F = _fuse(a[l], fusion, weights)
            At = (1.0 - residual) * F + residual * eye
            if renorm:
                At = At / At.sum(axis=1, keepdims=True)
            R = At if R is None else At @ R
            chain.append(R)
        mats = chain if per_layer else [R]
        per = []
        for Rm in mats:
            if rows == "mean":
                sel = Rm.mean(axis=0, keepdims=True)
            else:
                sel = Rm[list(rows), :]
            sel = sel[:, prefix:]
            full = np.zeros((sel.shape[0], n - prefix), dtype=dtype)
            for r in range(sel.shape[0]):
                full[r, : m - prefix] = _scale(sel[r], scale)
            if grid is not None:
                full = full.reshape(sel.shape[0], grid[0], grid[1])
            per.append(full)
        outs.append(np.stack(per) if per_layer else per[0])
    out = np.stack(outs) if batched else outs[0]
    return out


# --------------------------------------------------------------------------
# Self-test of the reference (no binaries needed).
# --------------------------------------------------------------------------


class ReferenceSelfTest(unittest.TestCase):
    """Checks the reference against hand-derived facts and a second
    formulation (row vector pushed through the layers)."""

    def test_row_vector_formulation(self):
        rng = np.random.default_rng(1)
        att = make_attention(rng, 5, 3, 9).astype(np.float64)
        got = reference_rollout(att, rows=(0, 4))
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
        np.testing.assert_allclose(reference_rollout(att, rows=(0, 1)),
                                   [[0.48, 0.52], [0.39, 0.61]], rtol=1e-12)
        # weighted w = [2], no renorm, a = 0.5: At = A + 0.5 I, one layer.
        np.testing.assert_allclose(
            reference_rollout(att[:1], fusion="weighted", weights=[2.0], renorm=False,
                              rows=(0, 1)),
            [[0.7, 0.8], [0.6, 0.9]], rtol=1e-12)
        # rows mean, prefix 1, scale none.
        np.testing.assert_allclose(reference_rollout(att, rows="mean", prefix=1),
                                   [[(0.52 + 0.61) / 2]], rtol=1e-12)

    def test_order_matters(self):
        # Two non-commuting layers: R = At_2 At_1, not At_1 At_2.
        A1 = np.array([[[1.0, 0.0], [1.0, 0.0]]])
        A2 = np.array([[[0.0, 1.0], [0.0, 1.0]]])
        att = np.stack([A1, A2])  # [L=2, H=1, 2, 2]
        got = reference_rollout(att, residual=0.0, rows=(0, 1))
        np.testing.assert_allclose(got, A2[0] @ A1[0])
        self.assertFalse(np.allclose(A2[0] @ A1[0], A1[0] @ A2[0]))

    def test_layer_range_and_per_layer(self):
        rng = np.random.default_rng(2)
        att = make_attention(rng, 4, 2, 6)
        pl = reference_rollout(att, layers=(1, 2), per_layer=True, rows=(0, 1))
        self.assertEqual(pl.shape, (2, 2, 6))
        only1 = reference_rollout(att[1:2], rows=(0, 1))
        np.testing.assert_allclose(pl[0], only1)
        np.testing.assert_allclose(pl[1], reference_rollout(att[1:3], rows=(0, 1)))

    def test_padding_equals_cropped(self):
        rng = np.random.default_rng(3)
        att = make_attention(rng, 3, 2, 8, batch=2, valid_lengths=(8, 5))
        np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(att[1, :, :, :5, 5:], 0.0)
        got = reference_rollout(att, prefix=1, valid_lengths=(8, 5), scale="max")
        self.assertEqual(got.shape, (2, 1, 7))
        crop = reference_rollout(att[1, :, :, :5, :5], prefix=1, scale="max")
        np.testing.assert_allclose(got[1, :, :4], crop)
        np.testing.assert_array_equal(got[1, :, 4:], 0.0)

    def test_scalings(self):
        x = np.array([1.0, 3.0, 2.0])
        np.testing.assert_allclose(_scale(x, "max"), [1 / 3, 1, 2 / 3])
        np.testing.assert_allclose(_scale(x, "minmax"), [0, 1, 0.5])
        np.testing.assert_allclose(_scale(x, "sum"), [1 / 6, 3 / 6, 2 / 6])
        np.testing.assert_array_equal(_scale(np.full(3, 0.2), "minmax"), 0.0)

    def test_bf16_rounding(self):
        x = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9,
                      1.0 + 2 ** -8 + 2 ** -9], dtype=np.float32)
        # 1+2^-8 is halfway between 1 and 1+2^-7: ties to even -> 1.
        # 1+3*2^-8 is halfway between 1+2^-7 and 1+2^-6: ties to even -> 1+2^-6.
        np.testing.assert_array_equal(
            round_bf16(x), np.array([1.0, 1.0, 1.0 + 2 ** -6, 1.0, 1.0 + 2 ** -7],
                                    dtype=np.float32))
        y = np.random.default_rng(4).random(1000).astype(np.float32)
        r = round_bf16(y)
        np.testing.assert_array_equal(r.view(np.uint32) & 0xFFFF, 0)
        self.assertLessEqual(np.max(np.abs(r - y) / y), 2.0 ** -8)


# --------------------------------------------------------------------------
# The server and the CLI.
# --------------------------------------------------------------------------


def _fmt_floats(xs):
    return ",".join(repr(float(x)) for x in xs)


class CliReferenceTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_e2e_"

    # -- helpers ------------------------------------------------------------

    def run_case(self, name, att, opts, ref_kwargs, wire="fp32", extra=()):
        # `wire` selects both the --wire flag (omitted for fp32, the default)
        # and the rounding applied to the reference's input.
        """Run `explain` and compare its output with the reference."""
        inp = self._write(name + "_in", att)
        out = os.path.join(self.tmp, name + "_out.npy")
        args = ["explain", "--attention", inp, "--out", out] + list(opts)
        if wire != "fp32":
            args += ["--wire", wire]
        args += list(extra)
        res = self.cli(*args)
        self.assertEqual(res.returncode, 0,
                         "CLI failed (%s)\ncmd: %s\nstdout:\n%s\nstderr:\n%s"
                         % (name, " ".join(args), res.stdout, res.stderr))
        got = np.load(out)
        self.assertEqual(got.dtype, np.float32, name)
        if wire == "fp16":
            ref_in, rtol, atol = round_fp16(att), 1e-3, 1e-5
        elif wire == "bf16":
            ref_in, rtol, atol = round_bf16(att), 1e-3, 1e-5
        else:
            ref_in, rtol, atol = att, 1e-4, 1e-6
        want = reference_rollout(ref_in, **ref_kwargs)
        self.assertEqual(got.shape, want.shape, name)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                   err_msg="case %s: %s" % (name, " ".join(args)))
        return got, res

    def expect_invalid(self, name, att, opts):
        inp = self._write(name + "_in", att)
        out = os.path.join(self.tmp, name + "_out.npy")
        args = ["explain", "--attention", inp, "--out", out] + list(opts)
        res = self.cli(*args)
        self.assertNotEqual(res.returncode, 0,
                            "CLI accepted bad input (%s): %s\nstdout:\n%s"
                            % (name, " ".join(args), res.stdout))
        self.assertIn("INVALID_ARGUMENT", res.stderr,
                      "case %s: stderr does not name INVALID_ARGUMENT:\n%s"
                      % (name, res.stderr))
        self.assertIsNone(self.server.poll(), "server died on bad input " + name)

    # -- the server is up ------------------------------------------------------

    def test_info(self):
        res = self.cli("info")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertTrue(res.stdout.strip(), "info printed nothing")

    def test_json_summary(self):
        rng = np.random.default_rng(100)
        att = make_attention(rng, 3, 2, 11)
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

    def test_float16_npy_input(self):
        # A float16 .npy (what torch users save from half models) is read as is.
        att = make_attention(np.random.default_rng(300), 3, 2, 16).astype(np.float16)
        inp = self._write("fp16_npy_in", att)
        out = os.path.join(self.tmp, "fp16_npy_out.npy")
        res = self.cli("explain", "--attention", inp, "--out", out, "--rows", "0,5",
                       "--wire", "fp16")
        self.assertEqual(res.returncode, 0, res.stderr)
        want = reference_rollout(att.astype(np.float32), rows=(0, 5))
        np.testing.assert_allclose(np.load(out), want, rtol=1e-3, atol=1e-5)

    def test_cost_model_picks_row_path_for_few_rows_and_chain_for_per_layer(self):
        att = make_attention(np.random.default_rng(301), 4, 2, 100)
        paths = {}
        for name, opts in (("one_row", ["--rows", "0"]),
                           ("per_layer", ["--rows", "0", "--per-layer"])):
            _, res = self.run_case("path_" + name, att, opts + ["--json"],
                                   dict(rows=(0,), per_layer=name == "per_layer"))
            paths[name] = json.loads(res.stdout)["path"]
        self.assertEqual(paths, {"one_row": "row", "per_layer": "chain"})

    # -- bad inputs ------------------------------------------------------------

    def test_invalid_row_index(self):
        att = make_attention(np.random.default_rng(200), 2, 2, 10)
        self.expect_invalid("bad_row", att, ["--rows", "10"])

    def test_invalid_grid(self):
        att = make_attention(np.random.default_rng(201), 2, 2, 17)
        # n - P = 15, 4x4 = 16.
        self.expect_invalid("bad_grid", att, ["--prefix", "2", "--grid", "4x4"])

    def test_invalid_head_weights_length(self):
        att = make_attention(np.random.default_rng(202), 2, 3, 8)
        self.expect_invalid("bad_weights", att,
                            ["--fusion", "weighted", "--head-weights", "0.5,0.25,0.125,0.125"])

    def test_invalid_negative_entry(self):
        att = make_attention(np.random.default_rng(203), 2, 2, 8)
        # Row still sums to 1; only the sign is wrong.
        att[1, 0, 3, 2] = -0.05
        att[1, 0, 3, 4] += np.float32(1.0 - att[1, 0, 3].sum(dtype=np.float64))
        self.assertLess(abs(float(att[1, 0, 3].sum(dtype=np.float64)) - 1.0), 1e-6)
        self.expect_invalid("bad_negative", att, [])

    def test_invalid_nan(self):
        att = make_attention(np.random.default_rng(204), 2, 2, 8)
        att[0, 1, 5, 6] = np.nan
        self.expect_invalid("bad_nan", att, [])

    def test_invalid_not_stochastic(self):
        att = make_attention(np.random.default_rng(205), 2, 2, 8)
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
        att = make_attention(rng, shape["L"], shape["H"], shape["n"],
                             batch=shape.get("B"), valid_lengths=shape.get("valid"))
        self.run_case(name, att, opts, ref_kwargs, wire=wire)
    test.__name__ = "test_case_" + name
    return test


for _i, _case in enumerate(_CASES):
    _t = _make_case_test(_i, *_case)
    setattr(CliReferenceTest, _t.__name__, _t)


if __name__ == "__main__":
    e2e_harness.main()
