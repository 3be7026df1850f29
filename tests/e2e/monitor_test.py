#!/usr/bin/python3
"""End-to-end test of live monitoring with real attnroll-server processes and
the CLI:

- the worked example of the README: a baseline pinned from an `attnroll audit`
  report (with a region), live traffic of the same model (no drift over the
  thresholds), then traffic of a model whose reliance moved to the other half
  of the grid: the EMD gauge crosses 0.5 cells at the sample the window's
  definition predicts from the maps the passes returned, and every gauge
  value along the way equals scipy's on the reconstructed window;
- `attnroll monitor --png` decoded by Pillow against the Monitor response's maps
  (the pictures' independent reference, picture_reference.py);
- `attnroll monitor --json --maps` against scipy (JS, EMD by linprog, centre of
  mass, region shares) and the window's mean map against numpy;
- a restart of the server on the same --data-dir keeps the baselines; a
  corrupt baseline file and a data dir that cannot be used stop the start;
- memory stays flat over 100,000 small monitored passes (RSS from /proc);
- every bad input with its status.

Run: /usr/bin/python3 tests/e2e/monitor_test.py --bin-dir BUILD_DIR
"""

import base64
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from scipy.spatial import distance

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "analysis"))
import e2e_harness  # noqa: E402
import picture_reference as pics  # noqa: E402
import numpy_reference as nr  # noqa: E402
import compare_reference as cr  # noqa: E402  (scipy EMD by linprog, centres of mass)

GRID = 4
N = GRID * GRID
BUCKETS, PER_BUCKET = 4, 10  # --monitor-window-samples 40 --monitor-buckets 4
LEFT = np.zeros((GRID, GRID), np.float32)
LEFT[:, :GRID // 2] = 1
EMD_THRESHOLD = 0.5  # cells, AttnrollRelianceMovedEMD in deploy/prometheus/prometheusrule.yaml


def scrape(port):
    """{(name, frozenset(labels)): value} of /metrics."""
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def gauge(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())))


def start_server(bin_dir, flags, log):
    """Starts attnroll-server; returns (process, grpc port, metrics port)."""
    proc = subprocess.Popen([os.path.join(bin_dir, "attnroll-server"), "--listen", "127.0.0.1:0",
                             "--metrics-listen", "127.0.0.1:0", "--workers", "2"] + flags,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    lines = queue.Queue()

    def drain():
        for raw in iter(proc.stdout.readline, b""):
            lines.put(raw.decode())
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    first = lines.get(timeout=20)
    m = re.match(r"attnroll-server listening grpc=127\.0\.0\.1:(\d+) metrics=127\.0\.0\.1:(\d+)", first or "")
    if not m:
        proc.kill()
        raise RuntimeError("server did not start: %r" % first)
    return proc, int(m.group(1)), int(m.group(2))


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    if proc.stdout is not None:
        proc.stdout.close()


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def normalised(maps):
    """[k, 16] maps -> each divided by its sum (float64)."""
    m = np.asarray(maps, np.float64).reshape(-1, N)
    return m / m.sum(axis=1, keepdims=True)


def window_mean(samples):
    """Mean map of the count window after these samples (in order): the last
    (B - 1) s + c of them, c = ((len - 1) mod s) + 1."""
    total = len(samples)
    c = (total - 1) % PER_BUCKET + 1
    keep = min(total, (BUCKETS - 1) * PER_BUCKET + c)
    return np.mean(samples[-keep:], axis=0), keep


def tensor(t):
    return np.frombuffer(base64.b64decode(t["data"]), np.float32).astype(np.float64)


class MonitorTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_monitor_"

    @classmethod
    def setUpClass(cls):
        cls.data_dir = tempfile.mkdtemp(prefix="attnroll_monitor_data_")
        cls.server_flags = ("--monitor-models", "vit,bert", "--monitor-window-samples",
                            BUCKETS * PER_BUCKET, "--monitor-buckets", BUCKETS, "--data-dir", cls.data_dir)
        super().setUpClass()
        cls.rng = np.random.default_rng(5)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.data_dir, ignore_errors=True)

    def explain(self, name, side, batch, *extra, model="vit"):
        """Streams one pass of `batch` sequences of the left/right model tagged
        with `model`; returns the maps the server computed [batch, 16]."""
        att = np.stack([nr.half_grid_attention(self.rng, GRID, side) for _ in range(batch)])
        path = self._write(name, att)
        out = os.path.join(self.tmp, name + "_maps.npy")
        self.cli_ok(name, ["explain", "--attention", path, "--layout", "blhnn", "--prefix", "1",
                           "--grid", "%dx%d" % (GRID, GRID), "--monitor-model", model, "--out", out]
                    + list(extra))
        return np.load(out).reshape(batch, N)

    def monitor_json(self, model="vit"):
        res = self.cli_ok("monitor", ["monitor", "--model", model, "--json", "--maps"])
        return json.loads(res.stdout)["models"][0]

    def check_against_scipy(self, state, samples, base_mean):
        """The Monitor response's numbers against scipy on its own maps, and its
        live mean map against the window rebuilt from the returned maps."""
        window = state["windows"][0]
        live = tensor(window["live"]["mean_map"])
        want, keep = window_mean(samples)
        self.assertEqual(int(window["live"]["samples"]), keep)
        np.testing.assert_allclose(live, want, atol=2e-7)
        base = tensor(window["baseline"]["mean_map"])
        np.testing.assert_allclose(base, base_mean, atol=2e-7)
        d = {x["metric"]: x for x in window["drift"]}
        p, q = base / base.sum(), live / live.sum()
        self.assertAlmostEqual(d["js_divergence"]["value"], distance.jensenshannon(p, q) ** 2, places=10)
        self.assertAlmostEqual(d["l1"]["value"], np.abs(p - q).sum(), places=10)
        self.assertAlmostEqual(d["emd"]["value"], cr.emd_linprog(p, q, GRID, GRID), places=6)
        ra, ca = cr.centre(p, GRID, GRID)
        rb, cb = cr.centre(q, GRID, GRID)
        self.assertAlmostEqual(d["com_shift"]["value"], np.hypot(rb - ra, cb - ca), places=10)
        inside = LEFT.ravel() != 0
        self.assertAlmostEqual(d["region_share_base"]["value"], p[inside].sum(), places=10)
        self.assertAlmostEqual(d["region_share_live"]["value"], q[inside].sum(), places=10)
        self.assertAlmostEqual(d["region_share_delta"]["value"], q[inside].sum() - p[inside].sum(),
                               places=10)
        return d

    def check_pngs(self, state):
        """`attnroll monitor --png DIR` against the maps of the Monitor response,
        drawn as explain's pictures are (picture_reference.py): the live mean in
        viridis, live - baseline in coolwarm centred on zero."""
        out = os.path.join(self.tmp, "png")
        os.makedirs(out)
        res = self.cli_ok("png", ["monitor", "--model", "vit", "--png", out])
        self.assertIn("model vit: live mean map %s/vit_mean.png: " % out, res.stdout)
        self.assertIn("model vit: shift map %s/vit_shift.png: " % out, res.stdout)
        window = state["windows"][0]
        live32 = np.frombuffer(base64.b64decode(window["live"]["mean_map"]["data"]), np.float32)
        base32 = np.frombuffer(base64.b64decode(window["baseline"]["mean_map"]["data"]), np.float32)
        pics.assert_picture(self, os.path.join(out, "vit_mean.png"),
                            live32.reshape(GRID, GRID).astype(np.float64), "viridis")
        shift32 = (live32 - base32).reshape(GRID, GRID)
        got = pics.assert_picture(self, os.path.join(out, "vit_shift.png"),
                                  shift32.astype(np.float64), "coolwarm", diverging=True)
        # The planted shift: the left half lost (blue over red), the right half
        # gained (red over blue), at every cell's centre pixel (16 a cell).
        centres = got[8::16, 8::16][:GRID, :GRID].astype(np.int64)
        self.assertTrue((centres[:, :GRID // 2, 2] > centres[:, :GRID // 2, 0]).all(), centres)
        self.assertTrue((centres[:, GRID // 2:, 0] > centres[:, GRID // 2:, 2]).all(), centres)

    def test_1_worked_example_baseline_from_audit_then_planted_shift(self):
        # 1. An audit of the deployed model (baseline = candidate = the left model).
        base_dir = os.path.join(self.tmp, "audit", "baseline")
        cand_dir = os.path.join(self.tmp, "audit", "candidate")
        os.makedirs(base_dir)
        os.makedirs(cand_dir)
        audit_maps = []
        for i in range(24):
            a = nr.half_grid_attention(self.rng, GRID, "left")
            np.save(os.path.join(base_dir, "img%02d.npy" % i), a)
            np.save(os.path.join(cand_dir, "img%02d.npy" % i), a)
        region = self._write("left", LEFT)
        report = os.path.join(self.tmp, "audit", "report.json")
        self.cli_ok("audit", ["audit", "--baseline", base_dir, "--candidate", cand_dir, "--prefix", "1",
                              "--grid", "4x4", "--region", region, "--report", report])
        with open(report) as f:
            base_mean = tensor(json.load(f)["overall"]["mean_baseline"])
        # The same maps through explain, for the reference mean.
        for i in range(24):
            out = os.path.join(self.tmp, "a%02d.npy" % i)
            self.cli_ok("explain", ["explain", "--attention", os.path.join(base_dir, "img%02d.npy" % i),
                                    "--prefix", "1", "--grid", "4x4", "--out", out])
            audit_maps.append(np.load(out).ravel())
        np.testing.assert_allclose(base_mean, normalised(audit_maps).mean(axis=0), atol=2e-7)

        # 2. Pin it for model vit, with the region.
        res = self.cli_ok("pin", ["baseline", "pin", "vit-audit", "--model", "vit", "--from-report", report,
                                  "--region", region, "--region-name", "left"])
        self.assertIn("pinned: vit-audit", res.stdout)
        self.assertIn(os.path.join(self.data_dir, "baselines", "vit-audit.baseline"), res.stdout)

        # 3. Live traffic of the same model: a full window, no drift over the thresholds.
        samples = list(normalised(self.explain("same0", "left", 20)))
        samples += list(normalised(self.explain("same1", "left", 20)))
        m = scrape(self.metrics_port)
        emd = gauge(m, "attnroll_reliance_drift", model="vit", metric="emd")
        self.assertIsNotNone(emd)
        self.assertLess(emd, EMD_THRESHOLD / 2)
        self.assertGreater(gauge(m, "attnroll_region_share", model="vit", region="left"), 0.7)
        self.assertEqual(gauge(m, "attnroll_monitor_window_samples", model="vit"), 40)
        self.assertEqual(gauge(m, "attnroll_monitor_baseline_pinned", model="vit"), 1)
        self.check_against_scipy(self.monitor_json(), np.array(samples), base_mean)

        # 4. The planted shift: the right model, 2 samples a pass, scraped after each.
        # The prediction comes from the window rebuilt from the returned maps.
        right = []
        crossed = predicted = None
        for step in range(1, 16):
            new = normalised(self.explain("shift%02d" % step, "right", 2))
            samples += list(new)
            right += list(new)
            want, _ = window_mean(np.array(samples))
            p = base_mean / base_mean.sum()
            expected = cr.emd_linprog(p, want / want.sum(), GRID, GRID)
            got = gauge(scrape(self.metrics_port), "attnroll_reliance_drift", model="vit", metric="emd")
            self.assertAlmostEqual(got, expected, places=5, msg="step %d" % step)
            if predicted is None and expected > EMD_THRESHOLD:
                predicted = 2 * step
            if crossed is None and got > EMD_THRESHOLD:
                crossed = 2 * step
        self.assertIsNotNone(crossed)
        self.assertEqual(crossed, predicted)
        # The bound of the docs: f * EMD(baseline, right model) > t with
        # f = shifted / window; window 31..40 samples.
        full = cr.emd_linprog(base_mean / base_mean.sum(), np.mean(right, axis=0), GRID, GRID)
        bound = int(np.ceil(EMD_THRESHOLD / full * BUCKETS * PER_BUCKET))
        self.assertLessEqual(crossed, bound + 2)
        print("\nplanted shift: EMD(baseline, right model) = %.3f cells; the EMD gauge crossed %.1f "
              "after %d shifted samples (predicted %d, bound %d)" % (full, EMD_THRESHOLD, crossed,
                                                                     predicted, bound))
        state = self.monitor_json()
        d = self.check_against_scipy(state, np.array(samples), base_mean)
        self.assertLess(d["region_share_delta"]["value"], -0.1)
        # Per-pass distributions are undefined for an audit baseline, and say why.
        self.assertFalse(d["entropy_w1"]["defined"])
        self.assertIn("audit report", d["entropy_w1"]["note"])
        self.check_pngs(state)
        # The terminal view.
        res = self.cli_ok("view", ["monitor", "--model", "vit", "--count", "2", "--interval", "0.1"])
        self.assertIn("model vit  baseline vit-audit", res.stdout)
        self.assertIn("emd", res.stdout)
        self.assertIn("shift (live - baseline", res.stdout)

    def test_2_sampling_live_baseline_and_identical_traffic(self):
        # Model bert: every third pass folded; monitor-only passes return no maps.
        att = self._write("bert", np.stack([nr.half_grid_attention(self.rng, GRID, "left") for _ in range(4)]))
        for _ in range(6):
            res = self.cli_ok("only", ["explain", "--attention", att, "--layout", "blhnn", "--prefix", "1",
                                       "--grid", "4x4", "--monitor-model", "bert", "--monitor-sample", "3",
                                       "--monitor-only", "--json"])
            self.assertIn('"monitor_only": true', res.stdout)
        state = self.monitor_json("bert")
        self.assertEqual(int(state["passes"]), 6)
        self.assertEqual(int(state["sampled_passes"]), 2)
        self.assertEqual(int(state["samples"]), 8)
        # A live baseline (40 samples of the left model), then identical traffic.
        for k in range(8):
            self.explain("bert_fill%d" % k, "left", 4, model="bert")
        self.cli_ok("pin", ["baseline", "pin", "bert-live", "--model", "bert", "--from-live"])
        alarms = 0
        worst = 0.0
        for k in range(20):
            self.explain("bert_same%d" % k, "left", 4, model="bert")
            m = scrape(self.metrics_port)
            emd = gauge(m, "attnroll_reliance_drift", model="bert", metric="emd")
            js = gauge(m, "attnroll_reliance_drift", model="bert", metric="js_divergence")
            w1 = gauge(m, "attnroll_reliance_drift", model="bert", metric="entropy_w1")
            worst = max(worst, emd)
            alarms += emd > EMD_THRESHOLD or js > 0.01
            self.assertIsNotNone(w1)  # a live baseline has per-pass distributions
        print("\nidentical traffic: 20 checks over 80 samples, %d alarms, largest EMD %.3f cells"
              % (alarms, worst))
        self.assertEqual(alarms, 0)
        res = self.cli_ok("list", ["baseline", "list", "--json"])
        names = sorted(b["name"] for b in json.loads(res.stdout)["baselines"])
        self.assertEqual(names, ["bert-live", "vit-audit"])

    def test_3_bad_inputs(self):
        att = self._write("bad", nr.half_grid_attention(self.rng, GRID, "left"))
        base = ["explain", "--attention", att, "--prefix", "1", "--grid", "4x4",
                "--out", os.path.join(self.tmp, "bad_out.npy")]
        self.cli_invalid("model", base + ["--monitor-model", "gpt"],
                         mention="header.monitor.model: expected one of the server's --monitor-models "
                                 "(vit, bert), got \"gpt\"")
        self.cli_invalid("sampling", base + ["--monitor-model", "vit", "--monitor-sample", "2000000"],
                         mention="header.monitor.sample_one_in: expected 0 to 1000000, got 2000000")
        res = self.cli(*(base + ["--monitor-sample", "3"]))
        self.assertEqual(res.returncode, 2)
        self.cli_invalid("name", ["baseline", "pin", "../up", "--model", "vit", "--from-live"],
                         mention="name: expected 1 to 64 characters")
        res = self.cli("baseline", "remove", "never-pinned")
        self.assertEqual(res.returncode, 1)
        self.assertIn('NOT_FOUND: name: no baseline "never-pinned"', res.stderr)
        res = self.cli("monitor", "--model", "gpt", "--once")
        self.assertEqual(res.returncode, 1)
        self.assertIn("INVALID_ARGUMENT: model: expected one of the server's --monitor-models", res.stderr)
        res = self.cli("monitor", "--png", self.tmp, "--json")
        self.assertEqual(res.returncode, 2)
        self.assertIn("--png and --json: expected one of them", res.stderr)
        missing = os.path.join(self.tmp, "no", "such", "dir")
        res = self.cli("monitor", "--model", "vit", "--png", missing)
        self.assertEqual(res.returncode, 1)
        self.assertIn("PERMISSION_DENIED: %s/vit_mean.png: cannot write (No such file or directory)" % missing, res.stderr)

    def test_4_restart_keeps_baselines_and_bad_data_dirs_stop_the_start(self):
        flags = ["--monitor-models", "vit,bert", "--data-dir", self.data_dir]
        # The class's server is stopped; a new process reads the same directory.
        self.server.send_signal(signal.SIGTERM)
        self.assertEqual(self.server.wait(timeout=15), 0)
        with open(os.path.join(self.tmp, "second.stderr"), "wb") as log:
            proc, port, _ = start_server(e2e_harness.BIN_DIR, flags, log)
        try:
            res = self.cli("baseline", "list", server="127.0.0.1:%d" % port)
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn("vit-audit", res.stdout)
            self.assertIn("bert-live", res.stdout)
            res = self.cli("monitor", "--model", "vit", "--json", server="127.0.0.1:%d" % port)
            self.assertEqual(json.loads(res.stdout)["models"][0]["baseline"], "vit-audit")
        finally:
            stop_server(proc)
        server = os.path.join(e2e_harness.BIN_DIR, "attnroll-server")
        # A corrupt baseline file: exit 1 naming it.
        bad = os.path.join(self.data_dir, "baselines", "broken.baseline")
        with open(bad, "wb") as f:
            f.write(b"\x0a\xff\xff\xff garbage")
        res = subprocess.run([server, "--listen", "127.0.0.1:0", "--metrics-listen", "none"] + flags,
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(res.returncode, 1)
        self.assertIn("DATA_LOSS: %s: corrupt" % bad, res.stderr)
        os.remove(bad)
        # A data dir that is a file.
        plain = os.path.join(self.tmp, "plain")
        with open(plain, "w") as f:
            f.write("x")
        res = subprocess.run([server, "--listen", "127.0.0.1:0", "--metrics-listen", "none",
                              "--monitor-models", "vit", "--data-dir", plain],
                             capture_output=True, text=True, timeout=20)
        self.assertEqual(res.returncode, 1)
        self.assertIn("FAILED_PRECONDITION: --data-dir: %s is not a directory" % plain, res.stderr)
        # A bad model list: exit 2 naming the flag.
        res = subprocess.run([server, "--monitor-models", "a,a"], capture_output=True, text=True, timeout=20)
        self.assertEqual(res.returncode, 2)
        self.assertIn("--monitor-models: expected a comma list of up to 32 distinct names", res.stderr)
        self.assertIn("a is listed twice", res.stderr)


class MemoryTest(e2e_harness.ServerTestCase):
    """100,000 small monitored passes (1 layer, 1 head, 5 tokens), folded every
    one: RSS after 20,000 and after 100,000 passes within 4 MiB."""
    tmp_prefix = "attnroll_monitor_mem_"
    server_flags = ("--monitor-models", "load", "--monitor-window-samples", "1000")
    cli_timeout_s = 300

    def bench(self, requests):
        res = self.cli_ok("bench", ["bench", "--shape", "1,1,5", "--requests", requests, "--rpc", "stream",
                                    "--concurrency", "2", "--warmup", "0", "--monitor-model", "load", "--json"])
        return json.loads(res.stdout)

    def test_memory_is_flat_over_100000_passes(self):
        t0 = time.time()
        self.bench(20000)
        rss_20k = rss_bytes(self.server.pid)
        self.bench(80000)
        rss_100k = rss_bytes(self.server.pid)
        seconds = time.time() - t0
        res = self.cli_ok("monitor", ["monitor", "--model", "load", "--json"])
        state = json.loads(res.stdout)["models"][0]
        self.assertEqual(int(state["passes"]), 100000)
        self.assertEqual(int(state["samples"]), 100000)
        self.assertEqual(int(state["windows"][0]["live"]["samples"]), 1000)
        print("\nmemory: RSS %.1f MiB after 20,000 monitored passes, %.1f MiB after 100,000 (%.1f s)"
              % (rss_20k / 2 ** 20, rss_100k / 2 ** 20, seconds))
        self.assertLess(rss_100k - rss_20k, 4 * 2 ** 20)


if __name__ == "__main__":
    e2e_harness.main()
