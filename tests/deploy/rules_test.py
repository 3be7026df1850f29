#!/usr/bin/python3
"""The alert and recording rules of deploy/prometheus/prometheusrule.yaml pass
`promtool check rules` and their unit tests (`promtool test rules`,
deploy/prometheus/tests/rules_test.yaml for the service's alerts,
drift_rules_test.yaml for live monitoring's), and promtool does fail them when a
rule is broken: a syntax error, and an alert whose threshold moved.

The rule file promtool reads is the PrometheusRule's spec, written to a
temporary directory beside a copy of the unit tests (plain Prometheus reads
the same file; deploy/README.md).

Run: /usr/bin/python3 tests/deploy/rules_test.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_testutil as du  # noqa: E402

RULE = os.path.join(du.DEPLOY, "prometheus", "prometheusrule.yaml")
TEST_DIR = os.path.join(du.DEPLOY, "prometheus", "tests")
TEST_FILES = ("rules_test.yaml", "drift_rules_test.yaml")


def rule_groups():
    with open(RULE) as f:
        return yaml.safe_load(f)["spec"]


class RulesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="attnroll_rules_")
        for name in TEST_FILES:
            shutil.copy(os.path.join(TEST_DIR, name), self.dir)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write_rules(self, spec):
        path = os.path.join(self.dir, "attnroll.rules.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False)
        return path

    def promtool(self, *args):
        return subprocess.run(["promtool"] + list(args), capture_output=True, text=True,
                              timeout=120, cwd=self.dir)

    def test_check_rules(self):
        spec = rule_groups()
        res = self.promtool("check", "rules", self.write_rules(spec))
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        count = sum(len(g["rules"]) for g in spec["groups"])
        self.assertIn("SUCCESS: %d rules found" % count, res.stdout)
        alerts = sorted(r["alert"] for g in spec["groups"] for r in g["rules"] if "alert" in r)
        # Error ratio, p99 latency, refusals by reason, queue and memory-budget
        # saturation, instance down (and the rest).
        self.assertEqual(alerts, ["AttnrollAbsent", "AttnrollHighPassLatency",
                                  "AttnrollInstanceDown", "AttnrollInvalidRequests",
                                  "AttnrollMemoryBudgetSaturated", "AttnrollMonitorNoBaseline",
                                  "AttnrollMonitorSkippingSamples", "AttnrollPassesSaturated",
                                  "AttnrollQueueSaturated", "AttnrollRefusingClients",
                                  "AttnrollRefusingForCapacity",
                                  "AttnrollRegionShareDistributionMoved",
                                  "AttnrollRegionShareDropped", "AttnrollRelianceMovedEMD",
                                  "AttnrollRelianceMovedJS", "AttnrollServerErrors"])
        for g in spec["groups"]:
            for r in g["rules"]:
                if "alert" in r:
                    self.assertIn(r["labels"]["severity"], ("critical", "warning", "info"), r["alert"])
                    self.assertTrue(r["annotations"]["summary"] and r["annotations"]["description"])

    def test_every_alert_has_a_unit_test(self):
        cases = []
        for name in TEST_FILES:
            with open(os.path.join(TEST_DIR, name)) as f:
                cases += yaml.safe_load(f)["tests"]
        tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])
                  if t["exp_alerts"]}
        alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}
        self.assertEqual(tested, alerts)
        records = {r["record"] for g in rule_groups()["groups"] for r in g["rules"] if "record" in r}
        exprs = " ".join(t["expr"] for case in cases for t in case.get("promql_expr_test", []))
        self.assertEqual({r for r in records if r in exprs}, records)

    def test_unit_tests_pass(self):
        self.write_rules(rule_groups())
        for name in TEST_FILES:
            res = self.promtool("test", "rules", name)
            self.assertEqual(res.returncode, 0, name + ": " + res.stdout + res.stderr)
            self.assertIn("SUCCESS", res.stdout)

    def test_promtool_fails_a_broken_rule(self):
        spec = rule_groups()
        broken = yaml.safe_load(yaml.safe_dump(spec))
        broken["groups"][0]["rules"][0]["expr"] = "sum by (pod (rate(attnroll_rpcs_total[5m]))"
        res = self.promtool("check", "rules", self.write_rules(broken))
        self.assertNotEqual(res.returncode, 0)
        # A threshold moved: the unit tests of its group notice.
        for alert, old, new, tests in (("AttnrollServerErrors", "> 0.01", "> 0.05", "rules_test.yaml"),
                                       ("AttnrollRelianceMovedEMD", "> 0.5", "> 0.9",
                                        "drift_rules_test.yaml")):
            moved = yaml.safe_load(yaml.safe_dump(spec))
            for g in moved["groups"]:
                for r in g["rules"]:
                    if r.get("alert") == alert:
                        r["expr"] = r["expr"].replace(old, new)
            self.write_rules(moved)
            res = self.promtool("test", "rules", tests)
            self.assertNotEqual(res.returncode, 0, alert)
            self.assertIn(alert, res.stdout + res.stderr)


if __name__ == "__main__":
    unittest.main()
