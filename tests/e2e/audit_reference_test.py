#!/usr/bin/python3
"""End-to-end test of `attnroll audit`: a synthetic dataset where a known shift
was planted (the candidate model attends to the right half of the image
instead of the left; numpy_reference.half_grid_attention) is detected,
identical models report zero drift, and the report carries the
distributions, groups and mean maps.

Run: /usr/bin/python3 tests/e2e/audit_reference_test.py --bin-dir BUILD_DIR
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)

GRID = 4  # 4x4 patches + 1 CLS token


class AuditReferenceTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_audit_"

    def dataset(self, name, shift, items=12):
        base = os.path.join(self.tmp, name, "baseline")
        cand = os.path.join(self.tmp, name, "candidate")
        os.makedirs(base)
        os.makedirs(cand)
        rng = np.random.default_rng(7)
        for i in range(items):
            a = nr.half_grid_attention(rng, GRID, "left")
            np.save(os.path.join(base, "img%02d.npy" % i), a)
            np.save(os.path.join(cand, "img%02d.npy" % i),
                    nr.half_grid_attention(rng, GRID, "right") if shift else a)
        groups = os.path.join(self.tmp, name, "groups.csv")
        with open(groups, "w") as f:
            for i in range(items):
                f.write("img%02d,%s\n" % (i, "day" if i % 3 else "night"))
        left = np.zeros((GRID, GRID), np.float32)
        left[:, :GRID // 2] = 1
        region = os.path.join(self.tmp, name, "left.npy")
        np.save(region, left)
        return base, cand, groups, region

    def audit(self, name, shift):
        base, cand, groups, region = self.dataset(name, shift)
        report = os.path.join(self.tmp, name, "report.json")
        res = self.cli("audit", "--baseline", base, "--candidate", cand, "--prefix", "1",
                       "--grid", "%dx%d" % (GRID, GRID), "--groups", groups, "--region", region,
                       "--max-emd", "0.5", "--max-region-drop", "0.2", "--report", report)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(report) as f:
            return json.load(f), res

    def test_planted_shift_is_detected(self):
        rep, res = self.audit("shift", shift=True)
        overall = rep["overall"]
        self.assertEqual(int(overall["items"]), 12)
        self.assertEqual(int(overall["drifted"]), 12)
        self.assertIn("12 drifted", res.stdout)
        metrics = {m["metric"]: m for m in overall["metrics"]}
        self.assertGreater(metrics["emd"]["median"], 0.5)
        self.assertLess(metrics["spearman"]["median"], 0.5)
        region = overall["region"]
        self.assertEqual(int(region["dropped"]), 12)
        self.assertGreater(region["mean_share_baseline"], 0.7)
        self.assertLess(region["mean_share_candidate"], 0.3)
        # The mean shift map: mass left the left half for the right half.
        import base64
        shift = np.frombuffer(base64.b64decode(overall["mean_shift"]["data"]), np.float32)
        shift = shift.reshape(GRID, GRID)
        self.assertTrue(np.all(shift[:, :GRID // 2] < 0))
        self.assertTrue(np.all(shift[:, GRID // 2:] > 0))
        self.assertEqual(sorted(g["group"] for g in rep["groups"]), ["day", "night"])
        self.assertEqual(len(metrics["emd"]["worst"]), 10)

    def test_identical_models_report_zero_drift(self):
        rep, _ = self.audit("same", shift=False)
        overall = rep["overall"]
        self.assertEqual(int(overall.get("drifted", 0)), 0)
        metrics = {m["metric"]: m for m in overall["metrics"]}
        self.assertAlmostEqual(metrics["emd"].get("max", 0.0), 0.0, places=9)
        self.assertAlmostEqual(metrics["l1"].get("max", 0.0), 0.0, places=9)
        self.assertAlmostEqual(metrics["spearman"]["min"], 1.0, places=9)

    def test_explain_options_reach_the_server(self):
        # Attention flow instead of rollout, and two read-out rows per item.
        base, cand, _, _ = self.dataset("flow", shift=True)
        report = os.path.join(self.tmp, "flow", "report.json")
        res = self.cli("audit", "--baseline", base, "--candidate", cand, "--method", "flow",
                       "--rows", "0,3", "--prefix", "1", "--max-l1", "0.2", "--report", report)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(report) as f:
            rep = json.load(f)
        self.assertEqual(int(rep["overall"]["items"]), 12)
        self.assertEqual(int(rep["overall"]["drifted"]), 12)
        shift = rep["overall"]["mean_shift"]
        self.assertEqual([int(d) for d in shift["shape"]], [2 * GRID * GRID])
        res = self.cli("audit", "--baseline", base, "--candidate", cand, "--out", "x.npy",
                       "--report", report)
        self.assertEqual(res.returncode, 2)

    def test_precomputed_maps(self):
        base = os.path.join(self.tmp, "maps", "baseline")
        cand = os.path.join(self.tmp, "maps", "candidate")
        os.makedirs(base)
        os.makedirs(cand)
        rng = np.random.default_rng(9)
        for i in range(6):
            left = np.zeros((GRID, GRID), np.float32)
            left[:, :2] = rng.random((GRID, 2)) + 0.5
            np.save(os.path.join(base, "m%d.npy" % i), left)
            np.save(os.path.join(cand, "m%d.npy" % i), left if i < 3 else left[:, ::-1].copy())
        report = os.path.join(self.tmp, "maps", "report.json")
        res = self.cli("audit", "--baseline", base, "--candidate", cand, "--grid", "4x4",
                       "--max-emd", "0.5", "--report", report)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(report) as f:
            rep = json.load(f)
        self.assertEqual(int(rep["overall"]["drifted"]), 3)
        self.assertEqual(sorted(rep["overall"]["drifted_ids"]), ["m3", "m4", "m5"])

    def test_missing_directory_and_usage(self):
        res = self.cli("audit", "--baseline", self.tmp, "--candidate", self.tmp + "/none",
                       "--report", os.path.join(self.tmp, "r.json"))
        self.assertEqual(res.returncode, 1)
        self.assertIn("NOT_FOUND", res.stderr)
        res = self.cli("audit", "--baseline", self.tmp)
        self.assertEqual(res.returncode, 2)


if __name__ == "__main__":
    e2e_harness.main()
