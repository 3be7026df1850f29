#!/usr/bin/python3
"""End-to-end test of sharded audits: a dataset audited whole on one server,
and as 3 shards (`attnroll audit --shard I/3 --state S.pb`) on 3 server
processes, merged offline by `attnroll audit-merge`: the merged report is the
whole audit's report, field for field and bit for bit (JSON floats print
exactly). Also: each shard audits exactly its items, and merges of shards
that do not make one audit are refused, naming the file.

Run: /usr/bin/python3 tests/e2e/audit_shards_test.py --bin-dir BUILD_DIR
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_harness  # noqa: E402  (the server harness, same directory)
import numpy_reference as nr  # noqa: E402  (the numpy reference, same directory)

GRID = 4
ITEMS = 20
SHARDS = 3


def start_server(server_bin):
    """Another attnroll-server on 127.0.0.1:0; returns (process, HOST:PORT)."""
    proc = subprocess.Popen([server_bin, "--listen", "127.0.0.1:0", "--metrics-listen", "none",
                             "--workers", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    m = re.match(r"attnroll-server listening grpc=(127\.0\.0\.1:\d+) ", line + " ")
    if not m:
        proc.kill()
        proc.wait(timeout=10)
        raise RuntimeError("second server did not start: %r" % line)
    return proc, m.group(1)


class AuditShardsTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_shards_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.replicas = []
        try:
            for _ in range(SHARDS - 1):
                cls.replicas.append(start_server(cls.server_bin))
        except Exception:
            cls.stop_replicas()
            super().tearDownClass()
            raise
        cls.base, cls.cand, cls.groups, cls.region = cls.make_dataset()

    @classmethod
    def stop_replicas(cls):
        for proc, _ in cls.replicas:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
            proc.stdout.close()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_replicas()
        finally:
            super().tearDownClass()

    @classmethod
    def make_dataset(cls):
        base = os.path.join(cls.tmp, "baseline")
        cand = os.path.join(cls.tmp, "candidate")
        os.makedirs(base)
        os.makedirs(cand)
        rng = np.random.default_rng(11)
        for i in range(ITEMS):
            a = nr.half_grid_attention(rng, GRID, "left")
            # A shift planted in every third item; the others differ by noise.
            b = (nr.half_grid_attention(rng, GRID, "right") if i % 3 == 0
                 else nr.half_grid_attention(rng, GRID, "left"))
            np.save(os.path.join(base, "img%02d.npy" % i), a)
            np.save(os.path.join(cand, "img%02d.npy" % i), b)
        groups = os.path.join(cls.tmp, "groups.csv")
        with open(groups, "w") as f:
            for i in range(ITEMS):
                group = "day" if i % 3 == 0 else ("night" if i % 2 else "dusk")
                f.write("img%02d,%s\n" % (i, group))
        left = np.zeros((GRID, GRID), np.float32)
        left[:, :GRID // 2] = 1
        region = os.path.join(cls.tmp, "left.npy")
        np.save(region, left)
        return base, cand, groups, region

    def audit_args(self, report, *extra, max_emd="0.5"):
        return ["audit", "--baseline", self.base, "--candidate", self.cand, "--prefix", "1",
                "--grid", "%dx%d" % (GRID, GRID), "--groups", self.groups, "--region",
                self.region, "--max-emd", max_emd, "--max-region-drop", "0.2",
                "--report", report] + list(extra)

    def load(self, path):
        with open(path) as f:
            return json.load(f)

    def shard(self, k, server, name="s", max_emd="0.5"):
        report = os.path.join(self.tmp, "%s%d.json" % (name, k))
        state = os.path.join(self.tmp, "%s%d.pb" % (name, k))
        res = self.cli(*self.audit_args(report, "--shard", "%d/%d" % (k, SHARDS), "--state", state,
                                        max_emd=max_emd), server=server)
        self.assertEqual(res.returncode, 0, res.stderr)
        return self.load(report), state

    def merge(self, *states, extra=()):
        out = os.path.join(self.tmp, "merged.json")
        if os.path.exists(out):
            os.remove(out)
        res = self.cli("audit-merge", "--report", out, *extra, *states)
        return res, out

    def test_merged_shards_equal_one_audit_of_everything(self):
        whole_path = os.path.join(self.tmp, "whole.json")
        res = self.cli(*self.audit_args(whole_path))
        self.assertEqual(res.returncode, 0, res.stderr)
        whole = self.load(whole_path)
        self.assertEqual(whole["overall"]["items"], str(ITEMS))
        self.assertNotIn("state", whole)
        servers = ["127.0.0.1:%d" % self.port] + [addr for _, addr in self.replicas]
        states = []
        for k in range(SHARDS):
            partial, state = self.shard(k, servers[k])
            # Shard k holds the items i with i mod 3 == k (natural order of names).
            self.assertEqual(int(partial["overall"]["items"]),
                             len(range(k, ITEMS, SHARDS)))
            self.assertNotIn("state", partial)
            states.append(state)
        # A shard alone is not the whole audit.
        self.assertNotEqual(partial["overall"], whole["overall"])
        # Merged in any order: the whole audit's report.
        for order in (states, states[::-1]):
            res, out = self.merge(*order)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn("merged 3 of 3 shards: %d items" % ITEMS, res.stdout)
            merged = self.load(out)
            self.assertEqual(merged, whole)
        # The planted shift shows: every item i % 3 == 0 drifted (emd or region drop).
        drifted = set(whole["overall"]["drifted_ids"])
        self.assertTrue({"img%02d" % i for i in range(0, ITEMS, 3)} <= drifted, drifted)
        self.assertEqual(sorted(g["group"] for g in whole["groups"]), ["day", "dusk", "night"])

    def test_merges_that_are_not_one_audit_are_refused(self):
        servers = ["127.0.0.1:%d" % self.port] + [addr for _, addr in self.replicas]
        states = [self.shard(k, servers[k], name="r")[1] for k in range(SHARDS)]
        res, out = self.merge(states[0], states[2])
        self.assertEqual(res.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: shards 1 of 3 are missing (--allow-missing merges what "
                      "is given)", res.stderr)
        self.assertFalse(os.path.exists(out))
        res, _ = self.merge(states[0], states[2], extra=("--allow-missing",))
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("merged 2 of 3 shards: %d items" % (len(range(0, ITEMS, 3))
                                                         + len(range(2, ITEMS, 3))), res.stdout)
        res, _ = self.merge(states[0], states[1], states[1])
        self.assertEqual(res.returncode, 1)
        self.assertIn("%s: shard 1/3 is given twice" % states[1], res.stderr)
        # A shard audited with another threshold belongs to another audit.
        _, other = self.shard(1, servers[1], name="other", max_emd="0.25")
        res, _ = self.merge(states[0], other, states[2])
        self.assertEqual(res.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: %s: audited with another header than %s (modified: "
                      "thresholds.max_emd: 0.5 -> 0.25)" % (other, states[0]), res.stderr)
        # Not a state at all.
        junk = os.path.join(self.tmp, "junk.pb")
        with open(junk, "wb") as f:
            f.write(b"\xff\xff\xff not a protobuf")
        res, _ = self.merge(junk)
        self.assertEqual(res.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: %s: not an audit state (attnroll audit --state)" % junk,
                      res.stderr)
        res, _ = self.merge(os.path.join(self.tmp, "absent.pb"))
        self.assertEqual(res.returncode, 1)
        self.assertIn("NOT_FOUND", res.stderr)
        # Usage.
        for args, message in (
                (("--shard", "3/3"), "--shard: expected I/N with 0 <= I < N, got \"3/3\""),
                (("--shard", "x"), "--shard: expected I/N with 0 <= I < N, got \"x\""),
                (("--shard", "0/0"), "--shard: expected I/N with 0 <= I < N, got \"0/0\"")):
            res = self.cli(*self.audit_args(os.path.join(self.tmp, "u.json"), *args))
            self.assertEqual(res.returncode, 2, res.stderr)
            self.assertIn(message, res.stderr)
        res = self.cli("audit-merge", states[0])
        self.assertEqual(res.returncode, 2)
        self.assertIn("--report is required", res.stderr)
        res = self.cli("audit-merge", "--report", out)
        self.assertEqual(res.returncode, 2)
        self.assertIn("expected at least one STATE.pb", res.stderr)


if __name__ == "__main__":
    e2e_harness.main()
