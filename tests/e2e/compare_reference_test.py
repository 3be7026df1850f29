#!/usr/bin/python3
"""End-to-end test of `attnroll compare` against a real server:
every metric comes back through the wire and the CLI, compared with scipy
(Debian's python3-scipy) and hand-derived values. The metric definitions are
tested in depth by tests/analysis/compare_test.cc; this file checks the RPC,
the CLI's JSON and .npy output, and bad inputs.

Run: /usr/bin/python3 tests/e2e/compare_reference_test.py --bin-dir BUILD_DIR
"""

import json
import os
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)


class CompareReferenceTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_compare_"

    def compare(self, name, a, b, *args):
        pa, pb = self._write(name + "_a", a), self._write(name + "_b", b)
        return self.cli("compare", "--a", pa, "--b", pb, *args)

    def compare_json(self, name, a, b, *args):
        res = self.compare(name, a, b, "--json", *args)
        self.assertEqual(res.returncode, 0, res.stderr)
        return json.loads(res.stdout)["comparisons"]

    def test_metrics_match_scipy(self):
        rng = np.random.default_rng(1)
        a = rng.random(64).astype(np.float32)
        b = (a + 0.3 * rng.random(64)).astype(np.float32)
        b[5] = b[6]  # a tie
        c = self.compare_json("scipy", a, b, "--top-k", "8")[0]
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        p, q = a64 / a64.sum(), b64 / b64.sum()
        self.assertAlmostEqual(c["spearman"], stats.spearmanr(a64, b64)[0], places=10)
        self.assertAlmostEqual(c["kendall_tau_b"], stats.kendalltau(a64, b64)[0], places=10)
        self.assertAlmostEqual(c["pearson"], stats.pearsonr(a64, b64)[0], places=10)
        self.assertAlmostEqual(c["cosine"], 1 - distance.cosine(a64, b64), places=10)
        self.assertAlmostEqual(c["l1"], np.abs(p - q).sum(), places=10)
        self.assertAlmostEqual(c["l2"], np.sqrt(((p - q) ** 2).sum()), places=10)
        self.assertAlmostEqual(c["js_divergence"], distance.jensenshannon(p, q) ** 2, places=10)
        top_a = set(np.argsort(-a64, kind="stable")[:8])
        top_b = set(np.argsort(-b64, kind="stable")[:8])
        self.assertAlmostEqual(c["top_k_iou"], len(top_a & top_b) / len(top_a | top_b))
        self.assertIn("undefined", json.dumps(c["ssim"]))  # no grid: said, not NaN

    def test_moved_mass_on_a_grid(self):
        # A unit mass moved by (3, 4) cells: EMD = centre-of-mass shift = 5.
        a = np.zeros((8, 8), np.float32)
        b = np.zeros((8, 8), np.float32)
        a[1, 1] = 1.0
        b[4, 5] = 1.0
        diff = os.path.join(self.tmp, "diff.npy")
        c = self.compare_json("moved", a, b, "--grid", "8x8", "--diff-out", diff)[0]
        self.assertAlmostEqual(c["emd"], 5.0, places=9)
        self.assertAlmostEqual(c["com_shift"], 5.0, places=9)
        self.assertEqual(c["com_a"], [1.0, 1.0])
        self.assertEqual(c["com_b"], [4.0, 5.0])
        self.assertAlmostEqual(c["js_divergence"], np.log(2), places=12)
        np.testing.assert_array_equal(np.load(diff), b - a)

    def test_identical_maps_and_region_shares(self):
        rng = np.random.default_rng(2)
        a = rng.random((2, 6, 6)).astype(np.float32)  # two maps on a 6x6 grid
        region = np.zeros((6, 6), np.float32)
        region[:3] = 1
        cs = self.compare_json("same", a, a, "--region", self._write("region", region),
                               "--ssim-window", "3")
        self.assertEqual(len(cs), 2)
        for k, c in enumerate(cs):
            self.assertAlmostEqual(c["spearman"], 1.0)
            self.assertAlmostEqual(c["l1"], 0.0)
            self.assertAlmostEqual(c["emd"], 0.0, places=12)
            self.assertAlmostEqual(c["ssim"], 1.0)
            self.assertEqual(c["top_k_iou"], 1.0)
            share = a[k, :3].sum(dtype=np.float64) / a[k].sum(dtype=np.float64)
            self.assertAlmostEqual(c["region_share_a"], share, places=6)
            self.assertAlmostEqual(c["region_share_b"], share, places=6)

    def test_constant_map_is_said_undefined(self):
        a = np.full(10, 0.1, np.float32)
        b = np.arange(1, 11, dtype=np.float32)
        c = self.compare_json("const", a, b)[0]
        self.assertIn("constant", c["spearman"]["undefined"])
        self.assertIn("constant", c["pearson"]["undefined"])
        res = self.compare("const_text", a, b)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("undefined (", res.stdout)

    def test_explain_pair_equals_two_explains_and_a_compare(self):
        rng = np.random.default_rng(3)
        pa = self._write("pair_a", nr.iid_attention(rng, (3, 2, 10, 10), scale=2.0))
        pb = self._write("pair_b", nr.iid_attention(rng, (3, 2, 10, 10), scale=2.0))
        oa, ob = os.path.join(self.tmp, "pair_oa.npy"), os.path.join(self.tmp, "pair_ob.npy")
        res = self.cli("explain-pair", "--baseline", pa, "--candidate", pb, "--prefix", "1",
                       "--grid", "3x3", "--rows", "0,4", "--out-baseline", oa, "--out-candidate",
                       ob, "--json")
        self.assertEqual(res.returncode, 0, res.stderr)
        pair = json.loads(res.stdout)["comparisons"]
        self.assertEqual(len(pair), 2)
        for side, path in (("a", pa), ("b", pb)):
            out = os.path.join(self.tmp, "pair_single_%s.npy" % side)
            r = self.cli("explain", "--attention", path, "--prefix", "1", "--grid", "3x3",
                         "--rows", "0,4", "--out", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            np.testing.assert_array_equal(np.load(out), np.load(oa if side == "a" else ob))
        single = self.compare_json("pair_cmp", np.load(oa), np.load(ob))
        self.assertEqual(pair, single)

    def test_bad_inputs(self):
        a = np.ones(9, np.float32)
        for name, b, args, needle in [
                ("shape", np.ones(10, np.float32), [], "b.shape"),
                ("negative", -np.ones(9, np.float32), [], "expected"),
                ("zero", np.zeros(9, np.float32), [], "sum"),
                ("grid", np.ones(9, np.float32), ["--grid", "2x2"], "options.grid"),
                ("region", np.ones(9, np.float32), ["--region", self._write("r", np.ones(4, np.float32))],
                 "options.region")]:
            res = self.compare("bad_" + name, a, b, *args)
            self.assertEqual(res.returncode, 1, name)
            self.assertIn("INVALID_ARGUMENT", res.stderr, name)
            self.assertIn(needle, res.stderr, name)
        res = self.cli("compare", "--a", self._write("only", a))
        self.assertEqual(res.returncode, 2)


if __name__ == "__main__":
    e2e_harness.main()
