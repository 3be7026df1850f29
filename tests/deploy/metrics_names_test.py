#!/usr/bin/python3
"""Every metric, label and label value that the dashboard, the alert and
recording rules and the HPA's prometheus-adapter rules name exists on a real
attnroll-server's /metrics.

A server is started on loopback and given traffic through the CLI (a rollout
pass, a flow pass, a comparison, a pass with a bad value, a pass over a
limit, monitored passes of a model before and after a baseline with a region
is pinned from them, and a monitored pass of the wrong length), then scraped; `promtool check metrics` lints the exposition and
prometheus_client parses it. Each PromQL expression (Grafana variables
substituted, the adapter's templates filled) is parsed by Prometheus's own
grammar (lezer-promql, tests/deploy/node/promql_names.mjs), and for each
selector:
- the metric is a sample name of the exposition (a histogram's _bucket,
  _count, _sum), a recording rule's name, or `up` (made by the scrape);
- each matcher's label is one of that metric's labels (a recording rule's
  output labels), or one the scrape adds (job, instance, namespace, pod, ...);
- an exact matcher's value was seen on that label, and each word of a regex
  alternation (code=~"INTERNAL|UNKNOWN") was seen or, for `code`, is a gRPC
  status code name;
and each by/without/on label is a label of a metric the expression selects.
A checker fed misspelled names, labels and values reports each of them.

Run: /usr/bin/python3 tests/deploy/metrics_names_test.py --bin-dir BUILD_DIR
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
import deploy_testutil as du  # noqa: E402
import e2e_harness  # noqa: E402

BIN_DIR = None
# Labels Prometheus adds to every scraped series (prometheus-operator's monitors).
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
SCRAPE_METRICS = {"up"}
GRPC_CODES = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "ns",
                     "$pod": ".*", "$model": ".*"}


# ---- what deploy/ refers to --------------------------------------------------

def rule_expressions():
    with open(os.path.join(du.DEPLOY, "prometheus", "prometheusrule.yaml")) as f:
        spec = yaml.safe_load(f)["spec"]
    out = []
    for g in spec["groups"]:
        for r in g["rules"]:
            name = r.get("record") or r.get("alert")
            out.append({"source": "rules:" + name, "expr": r["expr"], "record": r.get("record")})
    return out


def grafana(expr):
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        raise AssertionError("unknown Grafana variable in %s" % expr)
    return expr


def dashboard_expressions():
    out = []
    for path in du.deploy_files(".json"):
        with open(path) as f:
            dash = json.load(f)
        if "panels" not in dash:
            continue  # a single panel to import (live monitoring's, checked by its own tests)

        def walk(panels):
            for p in panels:
                for t in p.get("targets", []):
                    out.append({"source": "%s: %s" % (du.rel(path), p["title"]),
                                "expr": grafana(t["expr"])})
                walk(p.get("panels", []))
        walk(dash["panels"])
        for v in dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["query"]["query"])
            if not m:
                raise AssertionError("variable %s: %s" % (v["name"], v["query"]))
            # label_values(SELECTOR, LABEL): the label must be on the selected metric.
            out.append({"source": "%s: $%s" % (du.rel(path), v["name"]),
                        "expr": "count by (%s) (%s)" % (m.group(2), grafana(m.group(1)))})
    return out


def adapter_expressions():
    out = []
    for path, obj in du.kubernetes_objects():
        if obj["kind"] != "ConfigMap" or "config.yaml" not in obj.get("data", {}):
            continue
        for rule in yaml.safe_load(obj["data"]["config.yaml"])["rules"]:
            series = rule["seriesQuery"]
            out.append({"source": "adapter: " + rule["name"]["as"], "expr": series})
            metric = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", series).group(0)
            query = (rule["metricsQuery"].replace("<<.Series>>", metric)
                     .replace("<<.LabelMatchers>>", 'namespace="ns",pod="p"')
                     .replace("<<.GroupBy>>", "pod"))
            if "<<" in query:
                raise AssertionError("unfilled template in " + rule["metricsQuery"])
            out.append({"source": "adapter: " + rule["name"]["as"], "expr": query})
    return out


# ---- the checker -------------------------------------------------------------

class Exposition:
    """Sample names, their labels and the values seen, from /metrics text."""

    def __init__(self, text):
        self.labels = {}   # sample name -> label names
        self.values = {}   # (sample name, label) -> values seen
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.labels.setdefault(s.name, set()).update(s.labels)
                for k, v in s.labels.items():
                    self.values.setdefault((s.name, k), set()).add(v)


def check(parsed, exposition, records):
    """Problems (strings) of parsed expressions against an exposition.
    `records`: recording rule name -> its parsed expression."""
    # A recording rule's output labels: its grouping labels (le is consumed by
    # histogram_quantile); their values: those seen on the metrics it selects.
    rec_labels, rec_values = {}, {}
    for name, p in records.items():
        rec_labels[name] = set(p["grouping"]) - {"le"}
        for label in rec_labels[name]:
            vals = set()
            for sel in p["selectors"]:
                vals |= exposition.values.get((sel["metric"], label), set())
            rec_values[(name, label)] = vals
    problems = []
    for p in parsed:
        where = "%s: %s" % (p["source"], " ".join(p["expr"].split()))
        if p["error"]:
            problems.append("%s: %s" % (where, p["error"]))
            continue
        if not p["selectors"]:
            problems.append("%s: selects no metric" % where)
        selected_labels = set()
        for sel in p["selectors"]:
            metric = sel["metric"]
            if metric in exposition.labels:
                labels, values = exposition.labels[metric], lambda l: exposition.values.get((metric, l), set())
            elif metric in rec_labels:
                labels, values = rec_labels[metric], lambda l: rec_values.get((metric, l), set())
            elif metric in SCRAPE_METRICS:
                labels, values = set(), lambda l: set()
            else:
                problems.append("%s: no metric %s on /metrics" % (where, metric))
                continue
            selected_labels |= labels
            for m in sel["matchers"]:
                label, op, value = m["label"], m["op"], m["value"]
                if label in SCRAPE_LABELS:
                    continue  # added by the scrape, its values by the deployment
                if label not in labels:
                    problems.append("%s: %s has no label %s (it has: %s)"
                                    % (where, metric, label, ", ".join(sorted(labels)) or "none"))
                    continue
                seen = values(label)
                if op in ("=", "!="):
                    if value not in seen:
                        problems.append("%s: %s{%s} never has the value %r (seen: %s)"
                                        % (where, metric, label, value, ", ".join(sorted(seen))))
                elif re.fullmatch(r"[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*", value):
                    for word in value.split("|"):
                        if word not in seen and not (label == "code" and word in GRPC_CODES):
                            problems.append("%s: %s{%s} never has the value %r (seen: %s)"
                                            % (where, metric, label, word, ", ".join(sorted(seen))))
        for label in p["grouping"]:
            if label not in selected_labels and label not in SCRAPE_LABELS:
                problems.append("%s: groups by %s, which no selected metric has" % (where, label))
    return problems


def parse(expressions):
    rc, out, err = du.run_node(BIN_DIR, "promql_names.mjs",
                               [{"source": e["source"], "expr": e["expr"]} for e in expressions])
    if rc != 0:
        raise AssertionError("promql_names.mjs: exit %d\n%s" % (rc, err))
    parsed = json.loads(out)
    for e, p in zip(expressions, parsed):
        p["record"] = e.get("record")
    return parsed


class MetricsNamesTest(e2e_harness.ServerTestCase):
    tmp_prefix = "attnroll_deploy_metrics_"

    @classmethod
    def setUpClass(cls):
        # Small per-pass limits, so a pass can be refused for a limit; one
        # monitored model, so live monitoring's gauges exist.
        cls.data_dir = tempfile.mkdtemp(prefix="attnroll_deploy_metrics_data_")
        cls.addClassCleanup(shutil.rmtree, cls.data_dir, ignore_errors=True)
        cls.server_flags = ("--max-tokens", "16", "--monitor-models", "vit", "--data-dir",
                            cls.data_dir)
        super().setUpClass()
        d = cls.tmp
        uniform = np.full((2, 2, 5, 5), 0.2, np.float32)
        np.save(os.path.join(d, "good.npy"), uniform)
        bad = uniform.copy()
        bad[1, 0, 2, 2] = -1.0
        np.save(os.path.join(d, "bad.npy"), bad)
        np.save(os.path.join(d, "big.npy"), np.full((1, 1, 32, 32), 1 / 32, np.float32))
        rng = np.random.default_rng(7)
        np.save(os.path.join(d, "a.npy"), rng.random(16).astype(np.float32) + 0.1)
        np.save(os.path.join(d, "b.npy"), rng.random(16).astype(np.float32) + 0.1)
        np.save(os.path.join(d, "region.npy"), np.array([1, 0, 0, 0], np.float32))
        np.save(os.path.join(d, "nine.npy"), np.full((1, 1, 10, 10), 0.1, np.float32))
        out = os.path.join(d, "out.npy")
        server = "127.0.0.1:%d" % cls.port

        def cli(*args):
            return subprocess.run([cls.cli_bin, "--server", server, "--timeout", "30"] + list(args),
                                  capture_output=True, text=True, timeout=60)
        cls.results = {
            "rollout": cli("explain", "--attention", os.path.join(d, "good.npy"), "--out", out),
            "flow": cli("explain", "--attention", os.path.join(d, "good.npy"), "--method", "flow",
                        "--out", out),
            # Every head sent, so the server (not the client's fusion) refuses it.
            "invalid": cli("explain", "--attention", os.path.join(d, "bad.npy"), "--out", out,
                           "--client-fusion", "off"),
            "limits": cli("explain", "--attention", os.path.join(d, "big.npy"), "--out", out),
            "compare": cli("compare", "--a", os.path.join(d, "a.npy"), "--b",
                           os.path.join(d, "b.npy"), "--grid", "4x4"),
            "info": cli("info"),
        }
        # Live monitoring: CLS + a 2 x 2 grid, a baseline pinned from the live
        # window with a region, one more pass; a 3 x 3 map is of the wrong length.
        monitored = ["explain", "--attention", os.path.join(d, "good.npy"), "--prefix", "1",
                     "--grid", "2x2", "--monitor-model", "vit", "--out", out]
        cls.results["monitored"] = cli(*monitored)
        cls.results["pin"] = cli("baseline", "pin", "ref", "--model", "vit", "--from-live",
                                 "--region", os.path.join(d, "region.npy"), "--region-name", "object")
        cls.results["monitored_after"] = cli(*monitored)
        # Passes folded while a baseline with a region is pinned have per-pass
        # region shares: a baseline pinned from them has their distribution too
        # (one baseline per model: the first is removed).
        cls.results["remove"] = cli("baseline", "remove", "ref")
        cls.results["pin_again"] = cli("baseline", "pin", "ref2", "--model", "vit", "--from-live",
                                       "--region", os.path.join(d, "region.npy"), "--region-name",
                                       "object")
        cls.results["monitored_last"] = cli(*monitored)
        cls.results["monitored_shape"] = cli("explain", "--attention", os.path.join(d, "nine.npy"),
                                             "--prefix", "1", "--grid", "3x3", "--monitor-model",
                                             "vit", "--out", out)
        cls.body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % cls.metrics_port,
                                          timeout=10).read().decode()
        cls.exposition = Exposition(cls.body)
        expressions = rule_expressions() + dashboard_expressions() + adapter_expressions()
        cls.parsed = parse(expressions)
        cls.records = {p["record"]: p for p in cls.parsed if p["record"]}

    def test_the_traffic_happened(self):
        r = self.results
        for ok in ("rollout", "flow", "compare", "info", "monitored", "pin", "monitored_after",
                   "remove", "pin_again", "monitored_last", "monitored_shape"):
            self.assertEqual(r[ok].returncode, 0, (ok, r[ok].stderr))
        self.assertIn("INVALID_ARGUMENT", r["invalid"].stderr)
        self.assertIn("RESOURCE_EXHAUSTED", r["limits"].stderr)
        e = self.exposition
        self.assertIn("INVALID_ARGUMENT", e.values[("attnroll_rpcs_total", "code")])
        self.assertEqual(e.values[("attnroll_compute_seconds_bucket", "analysis")] >= {"rollout", "flow"},
                         True, e.values[("attnroll_compute_seconds_bucket", "analysis")])

    def test_promtool_lints_the_exposition(self):
        res = subprocess.run(["promtool", "check", "metrics"], input=self.body, capture_output=True,
                             text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)

    def test_every_name_in_the_dashboard_rules_and_adapter_exists(self):
        self.maxDiff = None
        sources = {p["source"].split(":")[0] for p in self.parsed}
        self.assertTrue({"rules", "adapter"} <= sources, sources)
        self.assertGreaterEqual(len([p for p in self.parsed if p["source"].startswith("deploy/grafana")]), 20)
        self.assertEqual(check(self.parsed, self.exposition, self.records), [])
        # Every metric of the exposition that matters to an operator is watched somewhere.
        used = {s["metric"] for p in self.parsed for s in p["selectors"]}
        for family in ("attnroll_rpcs_total", "attnroll_passes_total", "attnroll_refusals_total",
                       "attnroll_pass_duration_seconds_bucket", "attnroll_passes_in_flight",
                       "attnroll_passes_in_flight_limit", "attnroll_worker_queue_depth",
                       "attnroll_worker_queue_capacity", "attnroll_memory_reserved_bytes",
                       "attnroll_memory_budget_bytes", "process_resident_memory_bytes",
                       "attnroll_build_info", "up"):
            self.assertIn(family, used)

    def test_the_checker_names_what_does_not_exist(self):
        wrong = parse([
            {"source": "t", "expr": "rate(attnroll_pass_duration_second_bucket[5m])"},
            {"source": "t", "expr": 'sum(rate(attnroll_rpcs_total{method="Explain"}[5m]))'},
            {"source": "t", "expr": 'rate(attnroll_refusals_total{reason="disk"}[5m])'},
            {"source": "t", "expr": 'rate(attnroll_rpcs_total{code=~"OK|NOPE"}[5m])'},
            {"source": "t", "expr": "sum by (lane) (attnroll_passes_in_flight)"},
            {"source": "t", "expr": 'attnroll:refusals:rate5m{reason="disk"}'},
            {"source": "t", "expr": "sum(rate(attnroll_rpcs_total[5m]) by"},
        ])
        problems = check(wrong, self.exposition, self.records)
        self.assertEqual(len(problems), 7, "\n".join(problems))
        self.assertIn("no metric attnroll_pass_duration_second_bucket", problems[0])
        self.assertIn("attnroll_rpcs_total has no label method", problems[1])
        self.assertIn("attnroll_refusals_total{reason} never has the value 'disk'", problems[2])
        self.assertIn("attnroll_rpcs_total{code} never has the value 'NOPE'", problems[3])
        self.assertIn("groups by lane, which no selected metric has", problems[4])
        self.assertIn("attnroll:refusals:rate5m{reason} never has the value 'disk'", problems[5])
        self.assertIn("syntax error", problems[6])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    args, rest = parser.parse_known_args()
    BIN_DIR = args.bin_dir
    e2e_harness.BIN_DIR = BIN_DIR
    unittest.main(argv=[sys.argv[0]] + rest)
