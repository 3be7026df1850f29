#!/usr/bin/python3
"""End-to-end test of the rollout variants of `attnroll explain`:
gradient-weighted rollout (rules chefer and vit_explain), pruning
(discard_ratio, threshold, mass, top_k), causal validation, --rows last and
--sink, head-specific rollout (--fusion none, --head-aggregate,
--aggregate-out), residual weights (--residual-weights) and value norms
(--value-norms), against a real `attnroll-server` and the independent numpy
reference of numpy_reference.py.

Run:
    /usr/bin/python3 tests/e2e/variants_reference_test.py --bin-dir BUILD_DIR [unittest args]
or set ATTNROLL_BIN_DIR.  Uses only the standard library and numpy.  The
reference and the input generators come from numpy_reference.py, the server
harness from e2e_harness.py (both in this directory).

The conventions the reference encodes are stated in numpy_reference.py
(rollout, prune, read_out, aggregate_heads).  What this suite adds:

  * The server reports, per sequence, "sequence b: pruning emptied N rows"
    (N summed over the layers of the range, and over the heads with
    --fusion none); the CLI prints it on stderr.  The reference counts the
    same rows.
  * The attention is validated as sent (before value norms); residual
    weights and value norms travel as float32 whatever the wire dtype; a
    chefer pass ignores the residual weights, --residual and --no-renorm.

Decisions the pruning takes on nearly equal numbers (a float32 rounding could
flip them) are measured by the reference ("margins"); every case asserts that
it is well conditioned, so a mismatch is a real disagreement.
"""

import os
import re
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)

# Smallest relative margin a pruning decision may have (see module doc).
MIN_MARGIN = 1e-5


# --------------------------------------------------------------------------
# Self-test of the reference (no binaries needed).
# --------------------------------------------------------------------------


def _prune_only(F, **kw):
    args = dict(discard_ratio=0.0, threshold=0.0, mass=0.0, top_k=0, renorm=False)
    args.update(kw)
    info = {}
    out, e = nr.prune(np.asarray(F, dtype=np.float64), margins=[], info=info, **args)
    return out, e, info


class ReferenceSelfTest(unittest.TestCase):

    def test_discard_keeps_corner(self):
        F = np.array([[0.01, 0.5, 0.49], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]])
        # k = floor(0.34 * 9) = 3 lowest: (0,0)=.01, (2,0)=.05, (2,2)=.05;
        # (0,0) is never zeroed, so only two entries go.
        out, e, info = _prune_only(F, discard_ratio=0.34)
        want = F.copy()
        want[2, 0] = want[2, 2] = 0.0
        np.testing.assert_array_equal(out, want)
        self.assertTrue(info.get("corner_in_discard"))
        self.assertEqual(e, 0)
        # Ties: lower flat index first. k = floor(0.23 * 9) = 2: (0,0) kept and
        # (2,0), not (2,2), zeroed.
        out, _, _ = _prune_only(F, discard_ratio=0.23)
        want = F.copy()
        want[2, 0] = 0.0
        np.testing.assert_array_equal(out, want)

    def test_threshold_mass_topk(self):
        row = np.array([[0.1, 0.4, 0.2, 0.3]])
        out, _, _ = _prune_only(row, threshold=0.25)
        np.testing.assert_array_equal(out, [[0, 0.4, 0, 0.3]])
        # mass 0.65: ascending .1 .2 .3 .4, shares .1 .3 .6 1.0; keep share > .35.
        out, _, _ = _prune_only(row, mass=0.65)
        np.testing.assert_array_equal(out, [[0, 0.4, 0, 0.3]])
        out, _, _ = _prune_only(row, mass=0.75)
        np.testing.assert_array_equal(out, [[0, 0.4, 0.2, 0.3]])
        out, _, _ = _prune_only(row, top_k=1, renorm=True)
        np.testing.assert_array_equal(out, [[0, 1, 0, 0]])
        ties = np.array([[0.25, 0.25, 0.25, 0.25]])
        out, _, _ = _prune_only(ties, top_k=2)
        np.testing.assert_array_equal(out, [[0.25, 0.25, 0, 0]])
        # mass with ties: ascending stable order is columns 0,1,2,3; shares
        # .25 .5 .75 1; P = 0.5 keeps share > .5 -> columns 2, 3.
        out, _, _ = _prune_only(ties, mass=0.5)
        np.testing.assert_array_equal(out, [[0, 0, 0.25, 0.25]])

    def test_emptied_rows(self):
        F = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.2, 0.7, 0.1]])
        out, e, _ = _prune_only(F, threshold=0.6, renorm=True)
        # row 0 emptied -> e_0; row 1 had no mass -> stays 0; row 2 keeps .7 -> 1.
        np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])
        self.assertEqual(e, 1)

    def test_chefer_identity(self):
        L, H, n = 3, 2, 4
        att = np.broadcast_to(np.eye(n), (L, H, n, n)).copy()
        got, _ = nr.rollout(att, grad=np.ones_like(att), rule="chefer", rows=(0, 1, 2, 3))
        np.testing.assert_allclose(got, 2.0 ** L * np.eye(n), rtol=1e-14)

    def test_plain_matches_direct_formulation(self):
        # Without a variant option the reference is plain rollout: the same
        # numbers as a direct, vectorised formulation of it (fusion max,
        # residual 0.3, layers 1..3 per layer, rows 0 and 2, prefix 1, minmax,
        # two padded sequences).
        rng = np.random.default_rng(7)
        att = nr.make_attention(rng, 4, 3, 9, batch=2, valid_lengths=(9, 6))
        kw = dict(fusion="max", residual=0.3, layers=(1, 3), per_layer=True, rows=(0, 2),
                  prefix=1, scale="minmax", valid_lengths=(9, 6))
        got, _ = nr.rollout(att, **kw)
        direct = np.zeros((2, 3, 2, 8))
        for b, m in enumerate((9, 6)):
            At = 0.7 * att[b, :, :, :m, :m].astype(np.float64).max(axis=1) + 0.3 * np.eye(m)
            At /= At.sum(axis=-1, keepdims=True)
            R = np.eye(m)
            for k, l in enumerate(range(1, 4)):
                R = At[l] @ R
                x = R[[0, 2], 1:]
                lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
                direct[b, k, :, :m - 1] = (x - lo) / (hi - lo)
        np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-15)

    def test_chefer_recurrence(self):
        # R_l = R_{l-1} + Ab_l R_{l-1}, written the other way round.
        rng = np.random.default_rng(8)
        att = nr.make_attention(rng, 3, 2, 6).astype(np.float64)
        grad = nr.make_gradient(rng, att.shape).astype(np.float64)
        got, _ = nr.rollout(att, grad=grad, rule="chefer", rows=(0, 1, 2, 3, 4, 5))
        R = np.eye(6)
        for l in range(3):
            Ab = np.maximum(0, grad[l] * att[l]).mean(0)
            R = R + Ab @ R
        np.testing.assert_allclose(got, R, rtol=1e-12)

    def test_sink(self):
        att = np.broadcast_to(np.full((3, 3), 1.0 / 3), (1, 1, 3, 3)).copy()
        got, _ = nr.rollout(att, sink=1, rows=(0,))
        np.testing.assert_allclose(got, [[0.0, 0.5, 0.5]])
        got, _ = nr.rollout(att, sink=1, prefix=1, scale="max", rows=(0,))
        np.testing.assert_allclose(got, [[1.0, 1.0]])

    def test_value_weighted(self):
        A = np.array([[[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]])
        v = np.array([[0.0, 2.0, 1.0]])
        # Row 0: (0, .5, .25) / .75; row 1: (0, 0, 0) stays 0; row 2: (0, .6, .5) / 1.1.
        np.testing.assert_allclose(nr.value_weighted(A, v)[0],
                                   [[0, 2 / 3, 1 / 3], [0, 0, 0], [0, 6 / 11, 5 / 11]],
                                   rtol=1e-15)

    def test_residual_weights_and_value_norms_neutral(self):
        rng = np.random.default_rng(9)
        L, H, n = 3, 2, 7
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        plain, _ = nr.rollout(att, rows=(0, 3), residual=0.3)
        for rw in (np.full(L, 0.3), np.full((L, n), 0.3)):
            got, _ = nr.rollout(att, rows=(0, 3), residual_weights=rw)
            np.testing.assert_allclose(got, plain, rtol=1e-13)
        # Norms all 1 only renormalise the rows (float32 rows sum to 1 within ~1e-7).
        got, _ = nr.rollout(att, rows=(0, 3), residual=0.3, value_norms=np.ones((L, H, n)))
        np.testing.assert_allclose(got, plain, rtol=1e-6)
        a64 = att.astype(np.float64)
        got, _ = nr.rollout(a64 / a64.sum(-1, keepdims=True), rows=(0, 3), residual=0.3)
        want, _ = nr.rollout(att, rows=(0, 3), residual=0.3, value_norms=np.ones((L, H, n)))
        np.testing.assert_allclose(got, want, rtol=1e-13)
        # Chefer ignores the residual weights.
        ch, _ = nr.rollout(att, grad=grad, rule="chefer", rows=(0, 3))
        got, _ = nr.rollout(att, grad=grad, rule="chefer", rows=(0, 3),
                           residual_weights=rng.uniform(0, 1, (L, n)))
        np.testing.assert_array_equal(got, ch)
        # Per token, by hand on one layer: At = diag(1 - a) A + diag(a).
        a = rng.uniform(0, 1, (1, n))
        got, _ = nr.rollout(att[:1], rows=tuple(range(n)), residual_weights=a, renorm=False)
        A = att[0].astype(np.float64).mean(0)
        np.testing.assert_allclose(got, (1 - a[0])[:, None] * A + np.diag(a[0]), rtol=1e-13)

    def test_fusion_none_is_one_head_models(self):
        rng = np.random.default_rng(10)
        L, H, n = 3, 3, 6
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        for kw in (dict(), dict(grad=grad, rule="chefer"), dict(grad=grad, rule="vit_explain"),
                   dict(per_layer=True, top_k=2)):
            got, _ = nr.rollout(att, fusion="none", rows=(0, 2), **kw)
            self.assertEqual(got.shape[0], H)
            for h in range(H):
                one = dict(kw)
                if "grad" in one:
                    one["grad"] = grad[:, h:h + 1]
                want, _ = nr.rollout(att[:, h:h + 1], rows=(0, 2), **one)
                np.testing.assert_array_equal(got[h], want)
        maps = rng.uniform(0, 1, (2, H, 2, n))
        np.testing.assert_allclose(nr.aggregate_heads(maps, "mean", batched=True),
                                   maps.mean(axis=1), rtol=1e-15)
        np.testing.assert_allclose(nr.aggregate_heads(maps[0], "weighted", [1, 2, 3]),
                                   maps[0, 0] + 2 * maps[0, 1] + 3 * maps[0, 2], rtol=1e-15)


# --------------------------------------------------------------------------
# The server and the CLI.
# --------------------------------------------------------------------------

_EMPTIED_RE = re.compile(r"sequence (\d+): pruning emptied (\d+) rows")


class VariantsTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_variants_"

    # -- helpers ------------------------------------------------------------

    def _input_args(self, name, att, grad, residual_weights, value_norms):
        args = ["explain", "--attention", self._write(name + "_in", att)]
        if np.ndim(att) == 5:
            args += ["--layout", "blhnn"]  # a 5-D array is never guessed
        if grad is not None:
            args += ["--gradient", self._write(name + "_grad", grad)]
        if residual_weights is not None:
            args += ["--residual-weights", self._write(name + "_rw", residual_weights)]
        if value_norms is not None:
            args += ["--value-norms", self._write(name + "_vn", value_norms)]
        return args

    def explain(self, name, att, opts, grad=None, wire="fp32", residual_weights=None,
                value_norms=None, aggregate_out=False):
        """Runs `explain`; returns (output array, completed process).  With
        aggregate_out, --aggregate-out is passed and its array is res.aggregate."""
        args = self._input_args(name, att, grad, residual_weights, value_norms)
        out = os.path.join(self.tmp, name + "_out.npy")
        args += ["--out", out] + [str(o) for o in opts]
        if aggregate_out:
            agg = os.path.join(self.tmp, name + "_agg.npy")
            args += ["--aggregate-out", agg]
        if wire != "fp32":
            args += ["--wire", wire]
        res = self.cli_ok(name, args)
        got = self.load_float32(out, name)
        res.cmdline = " ".join(args)
        res.aggregate = None
        if aggregate_out:
            res.aggregate = self.load_float32(agg, name)
        return got, res

    def emptied_reported(self, stderr):
        return {int(s): int(c) for s, c in _EMPTIED_RE.findall(stderr)}

    def run_case(self, name, att, opts, ref_kwargs, grad=None, wire="fp32", rtol=None,
                 atol=None, residual_weights=None, value_norms=None, aggregate=None):
        """Runs `explain` and compares maps and emptied-row counts with the
        reference (on the wire-rounded inputs; residual weights and value norms
        are float32 files and travel as float32).  aggregate: dict(how=...,
        weights=...) to also ask for --aggregate-out (the cli options carry
        --head-aggregate) and compare it with the aggregate of the reference
        maps."""
        got, res = self.explain(name, att, opts, grad=grad, wire=wire,
                                residual_weights=residual_weights, value_norms=value_norms,
                                aggregate_out=aggregate is not None)
        if wire == "fp32":
            rtol, atol = rtol or 1e-4, atol or 1e-6
        else:
            rtol, atol = rtol or 1e-3, atol or 1e-5
        margins, info = [], {}
        want, emptied = nr.rollout(nr.wire_round(att, wire), grad=nr.wire_round(grad, wire),
                                   margins=margins, info=info,
                                   residual_weights=residual_weights, value_norms=value_norms,
                                   **ref_kwargs)
        if margins:
            self.assertGreater(min(margins), MIN_MARGIN,
                               "case %s is ill-conditioned (a pruning decision is within "
                               "float32 rounding); change its seed" % name)
        self.assertEqual(got.shape, want.shape, "case %s: %s" % (name, res.cmdline))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol,
                                   err_msg="case %s: %s" % (name, res.cmdline))
        want_counts = {b: e for b, e in enumerate(emptied) if e > 0}
        self.assertEqual(self.emptied_reported(res.stderr), want_counts,
                         "case %s: emptied-row report on stderr:\n%s" % (name, res.stderr))
        if aggregate is not None:
            want_agg = nr.aggregate_heads(want, aggregate.get("how", "mean"),
                                       aggregate.get("weights"), batched=np.ndim(att) == 5)
            self.assertEqual(res.aggregate.shape, want_agg.shape,
                             "case %s aggregate: %s" % (name, res.cmdline))
            np.testing.assert_allclose(res.aggregate, want_agg, rtol=rtol, atol=atol,
                                       err_msg="case %s aggregate: %s" % (name, res.cmdline))
        return got, want, res, info

    def expect_invalid(self, name, att, opts, grad=None, exit_code=None, mention=None,
                       residual_weights=None, value_norms=None):
        args = self._input_args(name, att, grad, residual_weights, value_norms)
        args += ["--out", os.path.join(self.tmp, name + "_out.npy")] + [str(o) for o in opts]
        return self.cli_invalid(name, args, exit_code=exit_code, mention=mention)

    def expect_usage_error(self, name, att, opts):
        """A usage error of the CLI: exit 2, no output written."""
        out = os.path.join(self.tmp, name + "_out.npy")
        args = self._input_args(name, att, None, None, None) + ["--out", out]
        args += [str(o) for o in opts]
        res = self.cli(*args)
        self.assertEqual(res.returncode, 2, "case %s: %s\nstdout:\n%s\nstderr:\n%s"
                         % (name, " ".join(args), res.stdout, res.stderr))
        self.assertFalse(os.path.exists(out), "case %s wrote an output" % name)
        self.assertIsNone(self.server.poll(), "server died on " + name)
        return res

    # -- hand-built cases with known answers ------------------------------------

    def test_known_chefer_identity(self):
        # A = I, G = 1: Ab = mean_h max(0, I) = I, At = 2I, R = 2^L I (unnormalised).
        L, H, n = 4, 3, 6
        att = np.broadcast_to(np.eye(n, dtype=np.float32), (L, H, n, n)).copy()
        grad = np.ones_like(att)
        got, _ = self.explain("known_identity", att, ["--method", "grad-rollout",
                                                      "--rows", "0,1,2,3,4,5"], grad=grad)
        np.testing.assert_allclose(got, 2.0 ** L * np.eye(n), rtol=1e-6, atol=0)
        # Any gradient: only the diagonal survives, Ab = diag(mean_h max(0, G_ii)).
        rng = np.random.default_rng(11)
        grad = nr.make_gradient(rng, att.shape)
        got, _ = self.explain("known_identity_anygrad", att,
                              ["--method", "grad-rollout", "--rows", "0,1,2,3,4,5"], grad=grad)
        diag = np.ones(n)
        for l in range(L):
            d = np.maximum(0.0, np.diagonal(grad[l].astype(np.float64), axis1=1, axis2=2))
            diag *= 1.0 + d.mean(axis=0)
        np.testing.assert_allclose(got, np.diag(diag), rtol=1e-5, atol=0)

    def test_known_single_token_head(self):
        # One head, every query attends to token 0 only: A = 1 e_0^T =: P, P^2 = P.
        L, n = 3, 5
        P = np.zeros((n, n), dtype=np.float32)
        P[:, 0] = 1.0
        att = np.broadcast_to(P, (L, 1, n, n)).copy()
        rows = ["--rows", "0,1,2,3,4"]
        # Plain rollout, a = 0.5: At^L = (1 - 2^-L) P + 2^-L I.
        got, _ = self.explain("known_p_plain", att, rows)
        np.testing.assert_allclose(got, (1 - 2.0 ** -L) * P + 2.0 ** -L * np.eye(n),
                                   rtol=1e-6, atol=1e-7)
        # Chefer, G = 1: (I + P)^L = I + (2^L - 1) P.
        got, _ = self.explain("known_p_chefer", att, ["--method", "grad-rollout"] + rows,
                              grad=np.ones_like(att))
        np.testing.assert_allclose(got, np.eye(n) + (2.0 ** L - 1) * P, rtol=1e-6, atol=1e-7)

    def test_known_one_head_gradient(self):
        # Gradient zero on all heads but head 2 -> chefer on that head alone,
        # with mean fusion over H heads (divided by H).
        rng = np.random.default_rng(12)
        L, H, n = 3, 4, 8
        att = nr.make_attention(rng, L, H, n)
        grad = np.zeros_like(att)
        grad[:, 2] = nr.make_gradient(rng, (L, n, n), scale=3.0)
        rows = list(range(n))
        got, _ = self.explain("known_one_head", att,
                              ["--method", "grad-rollout", "--rows", ",".join(map(str, rows))],
                              grad=grad)
        R = np.eye(n)
        for l in range(L):
            Ab = np.maximum(0.0, grad[l, 2].astype(np.float64) * att[l, 2]) / H
            R = (np.eye(n) + Ab) @ R
        np.testing.assert_allclose(got, R, rtol=1e-5, atol=1e-7)
        # The same through the server with the head alone, weighted 1/H.
        alone, _ = self.explain("known_one_head_alone", att[:, 2:3].copy(),
                                ["--method", "grad-rollout", "--fusion", "weighted",
                                 "--head-weights", repr(1.0 / H), "--rows",
                                 ",".join(map(str, rows))], grad=grad[:, 2:3].copy())
        np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-7)

    def test_vit_explain_bug_column_normalisation_absent(self):
        # vit-explain divides by a.sum(dim=-1) without keepdim: a[i, j] / s[j].
        # With gradient weighting the fused rows no longer sum to 1, so the two
        # differ; we must match the per-row version.
        rng = np.random.default_rng(13)
        L, H, n = 3, 2, 7
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        rows = list(range(n))
        got, _ = self.explain("bug_colnorm", att,
                              ["--method", "grad-rollout", "--rule", "vit_explain",
                               "--rows", ",".join(map(str, rows))], grad=grad)

        def chain(per_row):
            R = None
            for l in range(L):
                F = np.maximum(0.0, (grad[l].astype(np.float64) * att[l]).mean(0))
                a = 0.5 * F + 0.5 * np.eye(n)
                s = a.sum(axis=-1)
                a = a / s[:, None] if per_row else a / s  # the bug broadcasts over columns
                R = a if R is None else a @ R
            return R

        right, wrong = chain(True), chain(False)
        self.assertGreater(np.abs(right - wrong).max(), 1e-2, "case does not separate the two")
        np.testing.assert_allclose(got, right, rtol=1e-4, atol=1e-6)
        self.assertGreater(np.abs(got - wrong).max(), 1e-2)

    def test_vit_explain_bug_reversed_gradients_absent(self):
        # vit-explain pairs attention l with gradient L-1-l (backward hooks
        # arrive in reverse).  Gradient l must go with attention layer l.
        rng = np.random.default_rng(14)
        L, H, n = 4, 3, 9
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        for rule in ("chefer", "vit_explain"):
            opts = ["--method", "grad-rollout", "--rule", rule, "--rows", "0,4"]
            got, _ = self.explain("bug_reversed_" + rule, att, opts, grad=grad)
            right, _ = nr.rollout(att, grad=grad, rule=rule, rows=(0, 4))
            wrong, _ = nr.rollout(att, grad=grad[::-1].copy(), rule=rule, rows=(0, 4))
            self.assertGreater(np.abs(right - wrong).max(), 1e-2, rule)
            np.testing.assert_allclose(got, right, rtol=1e-4, atol=1e-6, err_msg=rule)
            self.assertGreater(np.abs(got - wrong).max(), 1e-2, rule)
            # Sending the reversed list gives the reversed-pairing answer: the
            # server pairs by the index sent, not by anything else.
            got_rev, _ = self.explain("bug_reversed_sent_" + rule, att, opts,
                                      grad=grad[::-1].copy())
            np.testing.assert_allclose(got_rev, wrong, rtol=1e-4, atol=1e-6, err_msg=rule)

    def test_discard_corner_among_lowest(self):
        # Entry (0, 0) of every fused layer is among the lowest k (at half the
        # k-th lowest of the other entries, so that zeroing it would show): it
        # must survive, and one fewer entry is zeroed.
        rng = np.random.default_rng(15)
        L, H, n = 3, 2, 8
        att = np.zeros((L, H, n, n))
        for l in range(L):
            for h in range(H):
                att[l, h] = nr.softmax(0.7 * rng.standard_normal((n, n)))
        k = int(np.floor(np.float32(0.5) * n * n))
        for l in range(L):
            others = np.sort(att[l].mean(0).reshape(-1)[1:])
            c = 0.5 * others[k - 1]
            att[l, :, 0, 0] = c
            att[l, :, 0, 1:] *= (1 - c) / att[l, :, 0, 1:].sum(-1, keepdims=True)
        att = att.astype(np.float32)
        got, _, _, info = self.run_case("discard_corner", att,
                                        ["--discard-ratio", "0.5", "--rows", "0,3"],
                                        dict(discard_ratio=0.5, rows=(0, 3)))
        self.assertTrue(info.get("corner_in_discard"), "case does not exercise (0, 0)")

    def test_ties_on_uniform_attention(self):
        # Every entry 1/8 (exact in float32 and after the mean): all pruning
        # decisions are ties, broken as the conventions say.
        L, H, n = 2, 2, 8
        att = nr.uniform_attention(L, H, n)
        rows = ["--rows", "0,1,5", "--residual", "0"]
        # top_k 3: columns 0, 1, 2 kept in every row.
        got, _, _, _ = self.run_case("ties_top_k", att, ["--top-k", "3"] + rows,
                                     dict(top_k=3, rows=(0, 1, 5), residual=0.0))
        np.testing.assert_allclose(got, np.tile([1 / 3] * 3 + [0] * 5, (3, 1)), rtol=1e-6)
        # mass 0.55: ascending stable order is columns 0..7, shares k/8; keep
        # share > 0.45 -> columns 3..7.
        got, _, _, _ = self.run_case("ties_mass", att, ["--mass", "0.55"] + rows,
                                     dict(mass=0.55, rows=(0, 1, 5), residual=0.0))
        np.testing.assert_allclose(got, np.tile([0] * 3 + [0.2] * 5, (3, 1)), rtol=1e-6)
        # discard 0.25: k = 16, flat indices 0..15 (rows 0 and 1), (0, 0) kept:
        # row 0 -> e_0, row 1 emptied -> e_1, once per layer.
        got, _, res, _ = self.run_case("ties_discard", att, ["--discard-ratio", "0.25"] + rows,
                                       dict(discard_ratio=0.25, rows=(0, 1, 5), residual=0.0))
        self.assertEqual(self.emptied_reported(res.stderr), {0: L}, res.stderr)

    def test_chefer_rows_without_mass_are_not_emptied(self):
        # A gradient <= 0 on row 2 of every head: Ab row 2 is 0 before pruning,
        # stays 0 (At row 2 = e_2) and is not counted as emptied.
        rng = np.random.default_rng(16)
        L, H, n = 3, 2, 8
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        grad[:, :, 2, :] = -np.abs(grad[:, :, 2, :])
        got, want, res, _ = self.run_case(
            "chefer_no_mass_rows", att,
            ["--method", "grad-rollout", "--threshold", "0.3", "--rows", "0,2,5"],
            dict(rule="chefer", threshold=0.3, rows=(0, 2, 5)), grad=grad)
        np.testing.assert_array_equal(got[1], np.eye(n)[2])

    # -- pruning that empties rows --------------------------------------------

    def test_threshold_empties_every_row(self):
        # Diffuse attention, threshold 0.99: every row of every layer is
        # emptied, so At = I and R = I.
        rng = np.random.default_rng(17)
        L, H, n = 3, 2, 10
        att = nr.make_mixed_attention(rng, L, H, n, diffuse_rows=set(range(n)))
        got, _, res, _ = self.run_case("empty_all", att,
                                       ["--threshold", "0.99", "--rows", "0,5"],
                                       dict(threshold=0.99, rows=(0, 5)))
        np.testing.assert_allclose(got, np.eye(n)[[0, 5]], atol=1e-7)
        self.assertEqual(self.emptied_reported(res.stderr), {0: L * n}, res.stderr)

    def test_threshold_empties_some_rows(self):
        rng = np.random.default_rng(18)
        L, H, n = 4, 3, 10
        diffuse = {1, 4, 7, 8}
        att = nr.make_mixed_attention(rng, L, H, n, diffuse_rows=diffuse)
        _, _, res, _ = self.run_case("empty_some", att,
                                     ["--threshold", "0.3", "--rows", "0,1,4", "--layers", "1:3"],
                                     dict(threshold=0.3, rows=(0, 1, 4), layers=(1, 3)))
        self.assertEqual(self.emptied_reported(res.stderr), {0: 3 * len(diffuse)}, res.stderr)

    def test_empties_rows_batched_per_sequence(self):
        rng = np.random.default_rng(19)
        L, H, n = 3, 2, 10
        a0 = nr.make_mixed_attention(rng, L, H, n, diffuse_rows={2, 3})
        a1 = nr.make_mixed_attention(rng, L, H, n, diffuse_rows=set())
        a2 = nr.make_mixed_attention(rng, L, H, n, diffuse_rows={0, 5, 9})
        att = np.stack([a0, a1, a2])
        _, _, res, _ = self.run_case("empty_batched", att,
                                     ["--threshold", "0.3", "--mass", "0.9", "--rows", "mean"],
                                     dict(threshold=0.3, mass=0.9, rows="mean"))
        self.assertEqual(self.emptied_reported(res.stderr), {0: 2 * L, 2: 3 * L}, res.stderr)

    def test_empties_rows_fusion_none(self):
        # Each head of --fusion none is pruned on its own; the report sums the
        # emptied rows over layers and heads.
        rng = np.random.default_rng(35)
        L, H, n = 3, 3, 10
        diffuse = {2, 5}
        att = nr.make_mixed_attention(rng, L, H, n, diffuse_rows=diffuse)
        _, _, res, _ = self.run_case("empty_fusion_none", att,
                                     ["--fusion", "none", "--threshold", "0.3", "--rows", "0,2"],
                                     dict(fusion="none", threshold=0.3, rows=(0, 2)),
                                     aggregate=dict(how="mean"))
        self.assertEqual(self.emptied_reported(res.stderr), {0: H * L * len(diffuse)},
                         res.stderr)

    def test_empties_rows_vit_explain(self):
        rng = np.random.default_rng(20)
        L, H, n = 3, 2, 9
        att = nr.make_mixed_attention(rng, L, H, n, diffuse_rows={0, 3, 6})
        grad = np.abs(nr.make_gradient(rng, att.shape)) + 0.5
        _, _, res, _ = self.run_case(
            "empty_vit_explain", att,
            ["--method", "grad-rollout", "--rule", "vit_explain", "--threshold", "0.25",
             "--rows", "0,1"],
            dict(rule="vit_explain", threshold=0.25, rows=(0, 1)), grad=grad)
        self.assertGreater(self.emptied_reported(res.stderr).get(0, 0), 0, res.stderr)

    # -- causal, last row, sink -------------------------------------------------

    def test_causal_rows_last_sink(self):
        rng = np.random.default_rng(21)
        att = nr.make_causal_attention(rng, 4, 3, 12)
        got, _, _, _ = self.run_case("causal_last_sink", att,
                                     ["--causal", "--rows", "last", "--sink", "1"],
                                     dict(rows="last", sink=1))
        self.assertEqual(got.shape, (1, 12))
        self.assertAlmostEqual(float(got[0, 0]), 0.0)
        # The causal flag changes nothing in the answer.
        plain, _ = self.explain("causal_last_sink_plain", att, ["--rows", "last", "--sink", "1"])
        np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-8)
        # --rows last is row n-1.
        explicit, _ = self.explain("causal_row_n1", att, ["--causal", "--rows", "11", "--sink",
                                                          "1"])
        np.testing.assert_allclose(got, explicit, rtol=1e-6, atol=1e-8)

    def test_causal_batched_valid_lengths(self):
        rng = np.random.default_rng(22)
        valid = (12, 7, 9)
        att = nr.make_causal_attention(rng, 3, 2, 12, batch=3, valid_lengths=valid)
        got, _, _, _ = self.run_case(
            "causal_batched", att,
            ["--causal", "--rows", "last", "--sink", "1", "--valid-lengths", "12,7,9"],
            dict(rows="last", sink=1, valid_lengths=valid))
        self.assertEqual(got.shape, (3, 1, 12))
        self.run_case("causal_batched_per_layer_prefix", att,
                      ["--causal", "--rows", "last", "--sink", "2", "--prefix", "1",
                       "--per-layer", "--scale", "sum", "--valid-lengths", "12,7,9"],
                      dict(rows="last", sink=2, prefix=1, per_layer=True, scale="sum",
                           valid_lengths=valid))

    def test_causal_grad_rollout(self):
        rng = np.random.default_rng(23)
        att = nr.make_causal_attention(rng, 3, 2, 10)
        grad = nr.make_gradient(rng, att.shape)
        self.run_case("causal_chefer", att,
                      ["--causal", "--method", "grad-rollout", "--rows", "last", "--sink", "1"],
                      dict(rule="chefer", rows="last", sink=1), grad=grad)

    def test_causal_rejects_upper_mass(self):
        rng = np.random.default_rng(24)
        att = nr.make_attention(rng, 2, 2, 8)
        self.expect_invalid("causal_full", att, ["--causal"], mention="causal layout")
        # One entry above the diagonal beyond the tolerance (1e-3 for fp32).
        att = nr.make_causal_attention(rng, 2, 2, 8).astype(np.float64)
        att[1, 1, 3, 5] = 2e-3
        att[1, 1, 3, :4] *= (1 - 2e-3) / att[1, 1, 3, :4].sum()
        self.expect_invalid("causal_one_entry", att.astype(np.float32), ["--causal"],
                            mention="causal layout")

    def test_causal_tolerates_small_upper_mass(self):
        rng = np.random.default_rng(25)
        att = nr.make_causal_attention(rng, 2, 2, 8).astype(np.float64)
        att[1, 1, 3, 5] = 4e-4
        att[1, 1, 3, :4] *= (1 - 4e-4) / att[1, 1, 3, :4].sum()
        self.run_case("causal_small_upper", att.astype(np.float32),
                      ["--causal", "--rows", "last"], dict(rows="last"))

    def test_rows_last_valid_lengths_noncausal(self):
        rng = np.random.default_rng(26)
        valid = (6, 10, 3)
        att = nr.make_attention(rng, 3, 2, 10, batch=3, valid_lengths=valid)
        self.run_case("rows_last_padded", att,
                      ["--rows", "last", "--valid-lengths", "6,10,3", "--prefix", "1"],
                      dict(rows="last", valid_lengths=valid, prefix=1))

    def test_sink2_prefix1_scale_max(self):
        rng = np.random.default_rng(27)
        att = nr.make_attention(rng, 4, 3, 17)
        got, _, _, _ = self.run_case(
            "sink2_prefix1_max", att,
            ["--sink", "2", "--prefix", "1", "--scale", "max", "--rows", "0,5,16",
             "--grid", "4x4"],
            dict(sink=2, prefix=1, scale="max", rows=(0, 5, 16), grid=(4, 4)))
        self.assertEqual(got.shape, (3, 4, 4))
        np.testing.assert_array_equal(got[:, 0, 0], 0.0)  # column 1 is a sink
        # Sink renormalisation happens before the prefix is dropped: without
        # scaling, columns 2.. of each map sum to 1.
        got, _, _, _ = self.run_case("sink2_prefix1_none", att,
                                     ["--sink", "2", "--prefix", "1", "--rows", "0,5,16"],
                                     dict(sink=2, prefix=1, rows=(0, 5, 16)))
        np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)

    # -- bad inputs ---------------------------------------------------------------

    def test_invalid_gradient_nan(self):
        rng = np.random.default_rng(30)
        att = nr.make_attention(rng, 2, 2, 8)
        grad = nr.make_gradient(rng, att.shape)
        grad[1, 0, 4, 2] = np.nan
        self.expect_invalid("bad_grad_nan", att, ["--method", "grad-rollout"], grad=grad)
        grad[1, 0, 4, 2] = np.inf
        self.expect_invalid("bad_grad_inf", att, ["--method", "grad-rollout", "--rule",
                                                  "vit_explain"], grad=grad)

    def test_invalid_gradient_shape(self):
        rng = np.random.default_rng(31)
        att = nr.make_attention(rng, 3, 2, 8)
        grad = nr.make_gradient(rng, (2, 2, 8, 8))
        self.expect_invalid("bad_grad_shape", att, ["--method", "grad-rollout"], grad=grad,
                            exit_code=1)

    def test_invalid_pruning_parameters(self):
        att = nr.make_attention(np.random.default_rng(32), 2, 2, 8)
        self.expect_invalid("bad_mass", att, ["--mass", "1.5"])
        self.expect_invalid("bad_discard", att, ["--discard-ratio", "1"])
        self.expect_invalid("bad_threshold", att, ["--threshold", "-0.1"])

    def test_invalid_sink(self):
        att = nr.make_attention(np.random.default_rng(33), 2, 2, 8)
        self.expect_invalid("bad_sink", att, ["--sink", "8"])
        # With padding the limit is the valid length.
        att = nr.make_attention(np.random.default_rng(34), 2, 2, 8, batch=2, valid_lengths=(8, 5))
        self.expect_invalid("bad_sink_padded", att, ["--sink", "5", "--valid-lengths", "8,5"])

    # -- head-specific rollout, residual weights, value norms ----------------------

    def test_fusion_none_heads_are_one_head_runs(self):
        # Head h of --fusion none is the answer for a model made of head h alone.
        rng = np.random.default_rng(40)
        L, H, n = 3, 3, 9
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        for method, g in ((["--rows", "0,4"], None),
                          (["--method", "grad-rollout", "--rows", "0,4"], grad)):
            tag = "plain" if g is None else "chefer"
            rule = None if g is None else "chefer"
            got, _, res, _ = self.run_case("none_heads_" + tag, att, ["--fusion", "none"] + method,
                                           dict(fusion="none", rule=rule, rows=(0, 4)), grad=g,
                                           aggregate=dict(how="mean"))
            for h in range(H):
                alone, _ = self.explain("none_head_alone_%s_%d" % (tag, h), att[:, h:h + 1].copy(),
                                        method, grad=None if g is None else g[:, h:h + 1].copy())
                np.testing.assert_allclose(got[h], alone, rtol=1e-5, atol=1e-7,
                                           err_msg="%s head %d" % (tag, h))
        # One head: fusion none = the default run, aggregate = the head's map.
        one = att[:, 1:2].copy()
        got, res = self.explain("none_one_head", one, ["--fusion", "none", "--rows", "0,4"],
                                aggregate_out=True)
        plain, _ = self.explain("none_one_head_plain", one, ["--rows", "0,4"])
        self.assertEqual(got.shape, (1,) + plain.shape)
        np.testing.assert_allclose(got[0], plain, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(res.aggregate, plain, rtol=1e-6, atol=1e-8)

    def test_residual_weights_half_equal_default(self):
        rng = np.random.default_rng(41)
        L, H, n = 4, 3, 12
        att = nr.make_attention(rng, L, H, n)
        opts = ["--rows", "0,5,11"]
        plain, _ = self.explain("rw_half_plain", att, opts)
        for tag, rw in (("layer", np.full(L, 0.5, np.float32)),
                        ("token", np.full((L, n), 0.5, np.float32))):
            got, want, _, _ = self.run_case("rw_half_" + tag, att, opts, dict(rows=(0, 5, 11)),
                                            residual_weights=rw)
            np.testing.assert_allclose(got, plain, rtol=1e-6, atol=1e-8, err_msg=tag)
        # ... and the reference of the default run is the same numbers.
        want_plain, _ = nr.rollout(att, rows=(0, 5, 11))
        np.testing.assert_allclose(want, want_plain, rtol=1e-13)
        # Weights a everywhere replace --residual: the same as --residual a.
        rw = np.full(L, 0.2, np.float32)
        got, _ = self.explain("rw_02", att, opts, residual_weights=rw)
        res02, _ = self.explain("rw_02_plain", att, opts + ["--residual", "0.2"])
        np.testing.assert_allclose(got, res02, rtol=1e-6, atol=1e-8)

    def test_residual_weights_ignored_by_chefer(self):
        rng = np.random.default_rng(42)
        L, H, n = 3, 2, 10
        att = nr.make_attention(rng, L, H, n)
        grad = nr.make_gradient(rng, att.shape)
        rw = rng.uniform(0.0, 1.0, (L, n)).astype(np.float32)
        opts = ["--method", "grad-rollout", "--rows", "0,7"]
        got, _, _, _ = self.run_case("rw_chefer", att, opts, dict(rule="chefer", rows=(0, 7)),
                                     grad=grad, residual_weights=rw)
        without, _ = self.explain("rw_chefer_without", att, opts, grad=grad)
        np.testing.assert_allclose(got, without, rtol=1e-6, atol=1e-8)
        # Not a vacuous check: vit_explain does use them.
        vit = ["--method", "grad-rollout", "--rule", "vit_explain", "--rows", "0,7"]
        with_rw, _ = self.explain("rw_vit_with", att, vit, grad=grad, residual_weights=rw)
        without, _ = self.explain("rw_vit_without", att, vit, grad=grad)
        self.assertGreater(np.abs(with_rw - without).max(), 1e-3)

    def test_value_norms_ones_equal_plain(self):
        rng = np.random.default_rng(43)
        L, H, n = 4, 3, 12
        att = nr.make_attention(rng, L, H, n)
        opts = ["--rows", "0,5", "--fusion", "max"]
        plain, _ = self.explain("vn_ones_plain", att, opts)
        got, _, _, _ = self.run_case("vn_ones", att, opts, dict(rows=(0, 5), fusion="max"),
                                     value_norms=np.ones((L, H, n), np.float32))
        np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-8)
        # Any per-(layer, head) constant is the same as all ones.
        c = rng.uniform(0.5, 4.0, (L, H, 1)).astype(np.float32)
        got, _ = self.explain("vn_const", att, opts,
                              value_norms=np.broadcast_to(c, (L, H, n)).copy())
        np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-8)

    def test_value_norms_zero_column(self):
        # ||v_3|| = 0 in every layer and head: no query takes anything from
        # token 3 except token 3 itself through the residual, so R[i, 3] = 0
        # for i != 3.
        rng = np.random.default_rng(44)
        L, H, n = 4, 3, 10
        att = nr.make_attention(rng, L, H, n)
        vn = rng.uniform(0.1, 3.0, (L, H, n)).astype(np.float32)
        vn[:, :, 3] = 0.0
        got, _, _, _ = self.run_case("vn_zero_col", att, ["--rows", "0,3,7"],
                                     dict(rows=(0, 3, 7)), value_norms=vn)
        np.testing.assert_array_equal(got[[0, 2], 3], 0.0)
        self.assertGreater(got[1, 3], 0.0)
        got, _, _, _ = self.run_case("vn_zero_col_none", att,
                                     ["--rows", "0,3,7", "--fusion", "none"],
                                     dict(rows=(0, 3, 7), fusion="none"), value_norms=vn,
                                     aggregate=dict(how="mean"))
        np.testing.assert_array_equal(got[:, [0, 2], 3], 0.0)
        # A zero norm in one head of one layer only.
        vn = rng.uniform(0.1, 3.0, (L, H, n)).astype(np.float32)
        vn[2, 1, 6] = 0.0
        self.run_case("vn_zero_one_entry", att, ["--rows", "0,6"], dict(rows=(0, 6)),
                      value_norms=vn)

    def test_value_norms_zero_row_stays_zero(self):
        # Causal: query 0 sees only key 0; with ||v_0|| = 0 its row of A' sums
        # to 0 and stays 0, so At row 0 = e_0 (residual, renormalised).
        rng = np.random.default_rng(45)
        L, H, n = 3, 2, 9
        att = nr.make_causal_attention(rng, L, H, n)
        vn = rng.uniform(0.1, 3.0, (L, H, n)).astype(np.float32)
        vn[:, :, 0] = 0.0
        got, _, _, _ = self.run_case("vn_zero_row", att, ["--causal", "--rows", "0,4,8"],
                                     dict(rows=(0, 4, 8)), value_norms=vn)
        np.testing.assert_allclose(got[0], np.eye(n)[0], atol=1e-7)
        np.testing.assert_array_equal(got[1:, 0], 0.0)
        # The same with --no-renorm: At row 0 = 0.5 e_0 and R row 0 = 0.5^L e_0.
        got, _, _, _ = self.run_case("vn_zero_row_no_renorm", att,
                                     ["--causal", "--rows", "0,4", "--no-renorm"],
                                     dict(rows=(0, 4), renorm=False), value_norms=vn)
        np.testing.assert_allclose(got[0], 0.5 ** L * np.eye(n)[0], atol=1e-7)

    def test_invalid_residual_weights(self):
        rng = np.random.default_rng(46)
        L, H, n = 3, 2, 8
        att = nr.make_attention(rng, L, H, n)
        rw = np.full(L, 0.5, np.float32)
        rw[1] = 1.5
        self.expect_invalid("bad_rw_1_5", att, [], residual_weights=rw,
                            mention="residual_weights")
        rw[1] = -0.1
        self.expect_invalid("bad_rw_negative", att, [], residual_weights=rw,
                            mention="residual_weights")
        rw = np.full((L, n), 0.5, np.float32)
        rw[2, 5] = 1.5
        self.expect_invalid("bad_rw_token_1_5", att, [], residual_weights=rw,
                            mention="residual_weights")
        rw[2, 5] = np.nan
        self.expect_invalid("bad_rw_token_nan", att, [], residual_weights=rw,
                            mention="residual_weights")
        # Wrong shapes: refused by the CLI before anything is sent.
        for tag, shape in (("l_plus_1", (L + 1,)), ("l_n_minus_1", (L, n - 1)),
                           ("batched_for_4d", (1, L, n))):
            self.expect_invalid("bad_rw_shape_" + tag, att, [],
                                residual_weights=np.full(shape, 0.5, np.float32), exit_code=1,
                                mention="expected shape")
        batt = nr.make_attention(rng, L, H, n, batch=2)
        self.expect_invalid("bad_rw_shape_no_batch", batt, [],
                            residual_weights=np.full((L, n), 0.5, np.float32), exit_code=1,
                            mention="expected shape")

    def test_invalid_value_norms(self):
        rng = np.random.default_rng(47)
        L, H, n = 3, 2, 8
        att = nr.make_attention(rng, L, H, n)
        for tag, bad in (("negative", -0.5), ("nan", np.nan), ("inf", np.inf)):
            vn = np.ones((L, H, n), np.float32)
            vn[1, 1, 4] = bad
            self.expect_invalid("bad_vn_" + tag, att, [], value_norms=vn, mention="value_norms")
        self.expect_invalid("bad_vn_shape", att, [], value_norms=np.ones((L, H + 1, n),
                                                                        np.float32),
                            exit_code=1, mention="expected shape")

    def test_head_aggregate_usage_errors(self):
        att = nr.make_attention(np.random.default_rng(48), 2, 2, 8)
        agg = os.path.join(self.tmp, "usage_agg.npy")
        self.expect_usage_error("usage_agg_out", att, ["--aggregate-out", agg])
        self.assertFalse(os.path.exists(agg))
        self.expect_usage_error("usage_agg_out_mean", att,
                                ["--fusion", "mean", "--aggregate-out", agg])
        self.expect_usage_error("usage_head_agg", att, ["--head-aggregate", "max"])
        self.expect_usage_error("usage_head_agg_weighted", att,
                                ["--fusion", "weighted", "--head-weights", "1,1",
                                 "--head-aggregate", "mean"])


# Cases compared with the reference.  Each entry: (name, generator spec, cli
# options, reference kwargs [, wire]).  Generator spec: L, H, n, optional B
# and valid (valid lengths), grad=True for a gradient of the same shape
# (N(0, 1) + grad_offset), steps_matter=True to check (on the reference) that
# leaving out any one pruning step changes the answer, so that every step of
# a combined case is exercised.
_CASES = [
    # Gradient-weighted rollout.
    ("chefer_default", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--rows", "0,5"], dict(rule="chefer", rows=(0, 5))),
    ("chefer_explicit_rule_all_rows", dict(L=3, H=2, n=8, grad=True),
     ["--method", "grad-rollout", "--rule", "chefer", "--rows", "0,1,2,3,4,5,6,7"],
     dict(rule="chefer", rows=tuple(range(8)))),
    ("chefer_grad_normalize", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--grad-normalize", "--rows", "0,3,11"],
     dict(rule="chefer", grad_normalize=True, rows=(0, 3, 11))),
    ("chefer_fusion_max", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--fusion", "max", "--rows", "0,7"],
     dict(rule="chefer", fusion="max", rows=(0, 7))),
    # A positive gradient bias, or the min over heads of max(0, G*A) is ~0.
    ("chefer_fusion_min", dict(L=3, H=3, n=10, grad=True, grad_offset=1.0),
     ["--method", "grad-rollout", "--fusion", "min"], dict(rule="chefer", fusion="min")),
    ("chefer_fusion_weighted", dict(L=3, H=3, n=10, grad=True),
     ["--method", "grad-rollout", "--fusion", "weighted", "--head-weights", "0.5,2,0.25",
      "--rows", "0,9"],
     dict(rule="chefer", fusion="weighted", weights=[0.5, 2.0, 0.25], rows=(0, 9))),
    ("chefer_ignores_residual_and_no_renorm", dict(L=3, H=2, n=9, grad=True),
     ["--method", "grad-rollout", "--residual", "0.2", "--no-renorm", "--rows", "0,4"],
     dict(rule="chefer", rows=(0, 4))),
    ("chefer_per_layer_prefix_grid_scale", dict(L=3, H=2, n=17, grad=True),
     ["--method", "grad-rollout", "--per-layer", "--prefix", "1", "--grid", "4x4",
      "--scale", "minmax"],
     dict(rule="chefer", per_layer=True, prefix=1, grid=(4, 4), scale="minmax")),
    ("vit_explain", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--rows", "0,4"],
     dict(rule="vit_explain", rows=(0, 4))),
    ("vit_explain_residual_per_layer", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--residual", "0.3", "--per-layer",
      "--rows", "0,6"],
     dict(rule="vit_explain", residual=0.3, per_layer=True, rows=(0, 6))),
    ("vit_explain_no_renorm_max", dict(L=3, H=3, n=10, grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--no-renorm", "--fusion", "max"],
     dict(rule="vit_explain", renorm=False, fusion="max")),
    ("grad_layer_range_rows_mean", dict(L=6, H=2, n=10, grad=True),
     ["--method", "grad-rollout", "--layers", "1:4", "--rows", "mean"],
     dict(rule="chefer", layers=(1, 4), rows="mean")),
    ("vit_explain_layer_range_rows_mean", dict(L=6, H=2, n=10, grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--layers", "2:3", "--rows", "mean"],
     dict(rule="vit_explain", layers=(2, 3), rows="mean")),
    ("grad_fp16", dict(L=4, H=3, n=16, grad=True),
     ["--method", "grad-rollout", "--rows", "0,3"], dict(rule="chefer", rows=(0, 3)), "fp16"),
    ("grad_fp16_vit_explain", dict(L=4, H=3, n=16, grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--rows", "0,3"],
     dict(rule="vit_explain", rows=(0, 3)), "fp16"),
    ("grad_batched_padded", dict(L=3, H=2, n=12, B=3, valid=(12, 7, 9), grad=True),
     ["--method", "grad-rollout", "--valid-lengths", "12,7,9", "--prefix", "1", "--rows", "0,3"],
     dict(rule="chefer", valid_lengths=(12, 7, 9), prefix=1, rows=(0, 3))),
    ("grad_batched_padded_vit_explain_mean", dict(L=3, H=2, n=12, B=3, valid=(5, 12, 8),
                                                  grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--valid-lengths", "5,12,8",
      "--rows", "mean", "--scale", "max"],
     dict(rule="vit_explain", valid_lengths=(5, 12, 8), rows="mean", scale="max")),
    ("grad_batch1_5d_rows_last", dict(L=3, H=2, n=9, B=1, grad=True),
     ["--method", "grad-rollout", "--grad-normalize", "--rows", "last"],
     dict(rule="chefer", grad_normalize=True, rows="last")),
    # Few rows, larger n (row read-out path) and the full chain.
    ("chefer_row_path", dict(L=5, H=2, n=100, grad=True),
     ["--method", "grad-rollout", "--rows", "0"], dict(rule="chefer", rows=(0,))),
    ("chefer_chain_per_layer", dict(L=5, H=2, n=100, grad=True),
     ["--method", "grad-rollout", "--rows", "0", "--per-layer"],
     dict(rule="chefer", rows=(0,), per_layer=True)),
    # Pruning on plain rollout, one step at a time, then combined.
    ("prune_discard_ratio", dict(L=4, H=3, n=12),
     ["--discard-ratio", "0.3", "--rows", "0,5"], dict(discard_ratio=0.3, rows=(0, 5))),
    ("prune_discard_ratio_high", dict(L=3, H=2, n=10),
     ["--discard-ratio", "0.85", "--rows", "0,1,9"],
     dict(discard_ratio=0.85, rows=(0, 1, 9))),
    ("prune_threshold", dict(L=4, H=3, n=12),
     ["--threshold", "0.05", "--rows", "0,5"], dict(threshold=0.05, rows=(0, 5))),
    ("prune_mass", dict(L=4, H=3, n=12),
     ["--mass", "0.9", "--rows", "0,5"], dict(mass=0.9, rows=(0, 5))),
    ("prune_mass_small", dict(L=3, H=2, n=10),
     ["--mass", "0.35", "--rows", "mean"], dict(mass=0.35, rows="mean")),
    ("prune_top_k", dict(L=4, H=3, n=12),
     ["--top-k", "3", "--rows", "0,5"], dict(top_k=3, rows=(0, 5))),
    ("prune_top_k_1", dict(L=3, H=2, n=10),
     ["--top-k", "1", "--rows", "0,4,9"], dict(top_k=1, rows=(0, 4, 9))),
    ("prune_all_four", dict(L=4, H=3, n=12, steps_matter=True),
     ["--discard-ratio", "0.7", "--threshold", "0.05", "--mass", "0.8", "--top-k", "4",
      "--rows", "0,5,11"],
     dict(discard_ratio=0.7, threshold=0.05, mass=0.8, top_k=4, rows=(0, 5, 11))),
    ("prune_all_four_per_layer_fusion_max_res", dict(L=4, H=3, n=12, steps_matter=True),
     ["--discard-ratio", "0.6", "--threshold", "0.1", "--mass", "0.9", "--top-k", "5",
      "--per-layer", "--fusion", "max", "--residual", "0.3"],
     dict(discard_ratio=0.6, threshold=0.1, mass=0.9, top_k=5, per_layer=True,
          fusion="max", residual=0.3)),
    ("prune_top_k_no_renorm", dict(L=3, H=2, n=10),
     ["--top-k", "3", "--no-renorm", "--rows", "0,5"],
     dict(top_k=3, renorm=False, rows=(0, 5))),
    ("prune_threshold_residual0_layer_range", dict(L=5, H=2, n=10),
     ["--threshold", "0.08", "--residual", "0", "--layers", "1:3", "--rows", "0,2"],
     dict(threshold=0.08, residual=0.0, layers=(1, 3), rows=(0, 2))),
    ("prune_mass_batched_padded", dict(L=3, H=2, n=12, B=3, valid=(12, 6, 9)),
     ["--mass", "0.8", "--top-k", "4", "--valid-lengths", "12,6,9", "--prefix", "1",
      "--rows", "0,2"],
     dict(mass=0.8, top_k=4, valid_lengths=(12, 6, 9), prefix=1, rows=(0, 2))),
    ("prune_discard_fp16", dict(L=3, H=3, n=12),
     ["--discard-ratio", "0.4", "--top-k", "6", "--rows", "0,3"],
     dict(discard_ratio=0.4, top_k=6, rows=(0, 3)), "fp16"),
    ("prune_discard_row_path", dict(L=4, H=2, n=90),
     ["--discard-ratio", "0.5", "--rows", "0"], dict(discard_ratio=0.5, rows=(0,))),
    # Pruning with gradient weighting.
    # About half of G*A is negative: the discard ratio must reach past the zeros.
    ("prune_chefer_discard_topk", dict(L=4, H=3, n=12, grad=True, steps_matter=True),
     ["--method", "grad-rollout", "--discard-ratio", "0.7", "--top-k", "3", "--rows", "0,6"],
     dict(rule="chefer", discard_ratio=0.7, top_k=3, rows=(0, 6))),
    ("prune_chefer_grad_normalize_mass", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--grad-normalize", "--mass", "0.8", "--rows", "0,6"],
     dict(rule="chefer", grad_normalize=True, mass=0.8, rows=(0, 6))),
    ("prune_chefer_all_four", dict(L=3, H=2, n=10, grad=True, steps_matter=True),
     ["--method", "grad-rollout", "--discard-ratio", "0.8", "--threshold", "0.01",
      "--mass", "0.95", "--top-k", "4", "--rows", "0,1,2"],
     dict(rule="chefer", discard_ratio=0.8, threshold=0.01, mass=0.95, top_k=4,
          rows=(0, 1, 2))),
    ("prune_vit_explain_threshold", dict(L=4, H=3, n=12, grad=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--threshold", "0.02",
      "--rows", "0,6"],
     dict(rule="vit_explain", threshold=0.02, rows=(0, 6))),
    # Head-specific rollout (--fusion none); agg: also compare --aggregate-out.
    ("none_plain", dict(L=4, H=3, n=12, agg=dict(how="mean")),
     ["--fusion", "none", "--rows", "0,5"], dict(fusion="none", rows=(0, 5))),
    ("none_explicit_mean_rows_mean_residual", dict(L=3, H=2, n=10, agg=dict(how="mean")),
     ["--fusion", "none", "--head-aggregate", "mean", "--rows", "mean", "--residual", "0.3"],
     dict(fusion="none", rows="mean", residual=0.3)),
    ("none_per_layer_grid", dict(L=4, H=2, n=17, agg=dict(how="mean")),
     ["--fusion", "none", "--per-layer", "--layers", "1:3", "--prefix", "1", "--grid", "4x4",
      "--scale", "max", "--rows", "0,3"],
     dict(fusion="none", per_layer=True, layers=(1, 3), prefix=1, grid=(4, 4), scale="max",
          rows=(0, 3))),
    ("none_batched_padded", dict(L=3, H=3, n=12, B=3, valid=(12, 7, 9), agg=dict(how="mean")),
     ["--fusion", "none", "--valid-lengths", "12,7,9", "--prefix", "1", "--rows", "0,2",
      "--scale", "minmax"],
     dict(fusion="none", valid_lengths=(12, 7, 9), prefix=1, rows=(0, 2), scale="minmax")),
    ("none_batched_padded_per_layer_last_sink", dict(L=3, H=2, n=10, B=2, valid=(6, 10),
                                                     agg=dict(how="max")),
     ["--fusion", "none", "--head-aggregate", "max", "--valid-lengths", "6,10", "--per-layer",
      "--rows", "last", "--sink", "1"],
     dict(fusion="none", valid_lengths=(6, 10), per_layer=True, rows="last", sink=1)),
    ("none_chefer", dict(L=4, H=3, n=10, grad=True, agg=dict(how="mean")),
     ["--method", "grad-rollout", "--fusion", "none", "--rows", "0,4"],
     dict(rule="chefer", fusion="none", rows=(0, 4))),
    ("none_chefer_grad_normalize", dict(L=3, H=3, n=10, grad=True, agg=dict(how="mean")),
     ["--method", "grad-rollout", "--fusion", "none", "--grad-normalize", "--rows", "0,9"],
     dict(rule="chefer", fusion="none", grad_normalize=True, rows=(0, 9))),
    ("none_vit_explain", dict(L=4, H=3, n=10, grad=True, agg=dict(how="mean")),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--fusion", "none", "--rows", "0,4"],
     dict(rule="vit_explain", fusion="none", rows=(0, 4))),
    ("none_agg_max", dict(L=3, H=4, n=10, agg=dict(how="max")),
     ["--fusion", "none", "--head-aggregate", "max", "--rows", "0,6"],
     dict(fusion="none", rows=(0, 6))),
    ("none_agg_min", dict(L=3, H=4, n=10, agg=dict(how="min")),
     ["--fusion", "none", "--head-aggregate", "min", "--rows", "0,6", "--scale", "max"],
     dict(fusion="none", rows=(0, 6), scale="max")),
    ("none_agg_weighted", dict(L=3, H=3, n=10, agg=dict(how="weighted",
                                                         weights=[0.5, 2.0, 0.25])),
     ["--fusion", "none", "--head-aggregate", "weighted", "--head-weights", "0.5,2,0.25",
      "--rows", "0,6", "--prefix", "1", "--scale", "sum"],
     dict(fusion="none", rows=(0, 6), prefix=1, scale="sum")),
    ("none_top_k", dict(L=4, H=3, n=12, agg=dict(how="mean")),
     ["--fusion", "none", "--top-k", "3", "--rows", "0,5"],
     dict(fusion="none", top_k=3, rows=(0, 5))),
    ("none_discard_mass", dict(L=3, H=3, n=10, steps_matter=True, agg=dict(how="mean")),
     ["--fusion", "none", "--discard-ratio", "0.5", "--mass", "0.9", "--rows", "0,3"],
     dict(fusion="none", discard_ratio=0.5, mass=0.9, rows=(0, 3))),
    ("none_fp16", dict(L=3, H=3, n=16, agg=dict(how="mean")),
     ["--fusion", "none", "--rows", "0,3"], dict(fusion="none", rows=(0, 3)), "fp16"),
    ("none_row_path", dict(L=4, H=2, n=80, agg=dict(how="mean")),
     ["--fusion", "none", "--rows", "0"], dict(fusion="none", rows=(0,))),
    ("none_chain_per_layer", dict(L=4, H=2, n=80, agg=dict(how="mean")),
     ["--fusion", "none", "--rows", "0", "--per-layer"],
     dict(fusion="none", rows=(0,), per_layer=True)),
    # Residual weights (rw: "layer" -> [L], "token" -> [L, n], uniform in [0, 1),
    # leading B for batched input; padded positions hold weights that must not be used).
    ("rw_per_layer", dict(L=4, H=3, n=12, rw="layer"), ["--rows", "0,5"], dict(rows=(0, 5))),
    ("rw_per_layer_range_per_layer", dict(L=5, H=2, n=10, rw="layer"),
     ["--layers", "1:3", "--per-layer", "--rows", "0,4"],
     dict(layers=(1, 3), per_layer=True, rows=(0, 4))),
    ("rw_per_layer_batched", dict(L=3, H=2, n=10, B=2, rw="layer"),
     ["--rows", "mean", "--fusion", "max"], dict(rows="mean", fusion="max")),
    ("rw_per_token", dict(L=4, H=3, n=12, rw="token"),
     ["--rows", "0,5,11"], dict(rows=(0, 5, 11))),
    ("rw_per_token_rows_mean_fusion_min", dict(L=3, H=3, n=10, rw="token"),
     ["--rows", "mean", "--fusion", "min"], dict(rows="mean", fusion="min")),
    ("rw_per_token_no_renorm_fusion_max", dict(L=3, H=3, n=10, rw="token"),
     ["--rows", "0,9", "--fusion", "max", "--no-renorm"],
     dict(rows=(0, 9), fusion="max", renorm=False)),
    ("rw_per_token_batched_padded", dict(L=3, H=2, n=12, B=3, valid=(12, 7, 9), rw="token"),
     ["--valid-lengths", "12,7,9", "--prefix", "1", "--rows", "0,3"],
     dict(valid_lengths=(12, 7, 9), prefix=1, rows=(0, 3))),
    ("rw_per_token_batched_padded_last", dict(L=3, H=2, n=10, B=2, valid=(5, 10), rw="token"),
     ["--valid-lengths", "5,10", "--rows", "last", "--per-layer"],
     dict(valid_lengths=(5, 10), rows="last", per_layer=True)),
    ("rw_vit_explain", dict(L=4, H=3, n=12, grad=True, rw="layer"),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--rows", "0,4"],
     dict(rule="vit_explain", rows=(0, 4))),
    ("rw_vit_explain_token_no_renorm", dict(L=3, H=2, n=10, grad=True, rw="token"),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--no-renorm", "--rows", "0,4"],
     dict(rule="vit_explain", renorm=False, rows=(0, 4))),
    ("rw_token_top_k", dict(L=4, H=3, n=12, rw="token"),
     ["--top-k", "3", "--rows", "0,5"], dict(top_k=3, rows=(0, 5))),
    ("rw_token_row_path", dict(L=4, H=2, n=80, rw="token"), ["--rows", "0"], dict(rows=(0,))),
    ("rw_token_fp16", dict(L=3, H=3, n=16, rw="token"), ["--rows", "0,3"], dict(rows=(0, 3)),
     "fp16"),
    # Value norms (vn: uniform in [0.1, 3), [L, H, n], leading B).
    ("vn_random", dict(L=4, H=3, n=12, vn=True), ["--rows", "0,5"], dict(rows=(0, 5))),
    ("vn_fusion_max_residual_per_layer", dict(L=3, H=3, n=10, vn=True),
     ["--fusion", "max", "--residual", "0.3", "--per-layer", "--rows", "0,9"],
     dict(fusion="max", residual=0.3, per_layer=True, rows=(0, 9))),
    ("vn_fusion_weighted", dict(L=3, H=3, n=10, vn=True),
     ["--fusion", "weighted", "--head-weights", "0.5,2,0.25", "--rows", "0,9"],
     dict(fusion="weighted", weights=[0.5, 2.0, 0.25], rows=(0, 9))),
    ("vn_fp16", dict(L=4, H=3, n=16, vn=True), ["--rows", "0,3"], dict(rows=(0, 3)), "fp16"),
    ("vn_fp16_batched_padded", dict(L=3, H=2, n=12, B=2, valid=(12, 8), vn=True),
     ["--valid-lengths", "12,8", "--rows", "0,3"], dict(valid_lengths=(12, 8), rows=(0, 3)),
     "fp16"),
    ("vn_batched_padded", dict(L=3, H=2, n=12, B=3, valid=(12, 7, 9), vn=True),
     ["--valid-lengths", "12,7,9", "--prefix", "1", "--rows", "0,3", "--scale", "max"],
     dict(valid_lengths=(12, 7, 9), prefix=1, rows=(0, 3), scale="max")),
    ("vn_chefer", dict(L=4, H=3, n=10, grad=True, vn=True),
     ["--method", "grad-rollout", "--rows", "0,4"], dict(rule="chefer", rows=(0, 4))),
    ("vn_vit_explain", dict(L=4, H=3, n=10, grad=True, vn=True),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--rows", "0,4"],
     dict(rule="vit_explain", rows=(0, 4))),
    ("vn_top_k_threshold", dict(L=4, H=3, n=12, vn=True, steps_matter=True),
     ["--threshold", "0.1", "--top-k", "4", "--rows", "0,5"],
     dict(threshold=0.1, top_k=4, rows=(0, 5))),
    ("vn_row_path", dict(L=4, H=2, n=80, vn=True), ["--rows", "0"], dict(rows=(0,))),
    # All three together.
    ("vn_rw_none", dict(L=4, H=3, n=12, vn=True, rw="token",
                        agg=dict(how="weighted", weights=[1.0, 0.5, 2.0])),
     ["--fusion", "none", "--head-aggregate", "weighted", "--head-weights", "1,0.5,2",
      "--rows", "0,5"],
     dict(fusion="none", rows=(0, 5))),
    ("vn_rw_layer_none_chefer", dict(L=3, H=3, n=10, grad=True, vn=True, rw="layer",
                                     agg=dict(how="mean")),
     ["--method", "grad-rollout", "--fusion", "none", "--rows", "0,5"],
     dict(rule="chefer", fusion="none", rows=(0, 5))),
    ("vn_rw_none_vit_explain", dict(L=3, H=3, n=10, grad=True, vn=True, rw="token",
                                    agg=dict(how="max")),
     ["--method", "grad-rollout", "--rule", "vit_explain", "--fusion", "none",
      "--head-aggregate", "max", "--rows", "0,5"],
     dict(rule="vit_explain", fusion="none", rows=(0, 5))),
    ("vn_rw_none_batched_padded_per_layer", dict(L=3, H=2, n=12, B=2, valid=(12, 7), vn=True,
                                                 rw="token", agg=dict(how="mean")),
     ["--fusion", "none", "--valid-lengths", "12,7", "--per-layer", "--prefix", "1",
      "--rows", "0,2"],
     dict(fusion="none", valid_lengths=(12, 7), per_layer=True, prefix=1, rows=(0, 2))),
]


_PRUNE_KEYS = ("discard_ratio", "threshold", "mass", "top_k")
_ALL_BEFORE = {k: "before" for k in _PRUNE_KEYS}
_ALL_AFTER = {k: "after" for k in _PRUNE_KEYS}


def _placement_cases(cases):
    """Every pruning case above runs with each step in its published place
    (the default). Two more placements of each, both reachable per request:
    attnroll 0.1's (every step before the residual, the pruned rows
    renormalised before the residual is added) and every step after the
    residual, on At."""
    out = []
    for name, spec, opts, ref, *wire in cases:
        if not any(k in ref for k in _PRUNE_KEYS):
            continue
        out.append((name + "__renorm_before_residual", dict(spec, steps_matter=False),
                    opts + ["--prune-placement", "before", "--renorm-before-residual"],
                    dict(ref, prune_placement=_ALL_BEFORE, renorm_before_residual=True), *wire))
        out.append((name + "__after_residual", dict(spec, steps_matter=False),
                    opts + ["--prune-placement", "after"],
                    dict(ref, prune_placement=_ALL_AFTER), *wire))
    return out


_CASES += _placement_cases(_CASES)


def _make_case_test(index, name, spec, opts, ref_kwargs, wire="fp32"):
    def test(self):
        rng = np.random.default_rng(2000 + index)
        att = nr.make_attention(rng, spec["L"], spec["H"], spec["n"],
                                batch=spec.get("B"), valid_lengths=spec.get("valid"))
        grad = None
        if spec.get("grad"):
            grad = nr.make_gradient(rng, att.shape) + np.float32(spec.get("grad_offset", 0.0))
        lead = () if spec.get("B") is None else (spec["B"],)
        rw = None
        if spec.get("rw"):
            shape = (spec["L"],) if spec["rw"] == "layer" else (spec["L"], spec["n"])
            rw = rng.uniform(0.0, 1.0, lead + shape).astype(np.float32)
        vn = None
        if spec.get("vn"):
            vn = rng.uniform(0.1, 3.0, lead + (spec["L"], spec["H"], spec["n"]))
            vn = vn.astype(np.float32)
        extra = dict(residual_weights=rw, value_norms=vn)
        # The reference on the inputs as the server receives them.
        ra, rg = nr.wire_round(att, wire), nr.wire_round(grad, wire)
        if spec.get("steps_matter") or rw is not None or vn is not None:
            full, _ = nr.rollout(ra, grad=rg, **extra, **ref_kwargs)
        if spec.get("steps_matter"):
            for step in ("discard_ratio", "threshold", "mass", "top_k"):
                if step in ref_kwargs:
                    kw = dict(ref_kwargs)
                    del kw[step]
                    without, _ = nr.rollout(ra, grad=rg, **extra, **kw)
                    self.assertGreater(np.abs(full - without).max(), 1e-3,
                                       "case %s does not exercise %s" % (name, step))
        if rw is not None or vn is not None:
            # The option must matter for this input.
            for key in ("residual_weights", "value_norms"):
                if extra[key] is None or (key == "residual_weights"
                                          and ref_kwargs.get("rule") == "chefer"):
                    continue  # chefer ignores residual weights
                kw = dict(extra)
                kw[key] = None
                without, _ = nr.rollout(ra, grad=rg, **kw, **ref_kwargs)
                self.assertGreater(np.abs(full - without).max(), 1e-3,
                                   "case %s does not exercise %s" % (name, key))
        self.run_case(name, att, opts, ref_kwargs, grad=grad, wire=wire,
                      aggregate=spec.get("agg"), **extra)
    return test


e2e_harness.add_case_tests(VariantsTest, _CASES, _make_case_test)


if __name__ == "__main__":
    e2e_harness.main()
