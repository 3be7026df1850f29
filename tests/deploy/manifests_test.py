#!/usr/bin/python3
"""The files of deploy/ are well-formed and mean what they say.

- Every YAML and JSON file parses (PyYAML, json), yamllint is clean with the
  committed deploy/.yamllint.yaml, and every kustomization lists exactly the
  files beside it.
- Every Kubernetes object validates against the Kubernetes API schemas and
  prometheus-operator's (npm kubernetes-models, @kubernetes-models/
  prometheus-operator; tests/deploy/node/validate_k8s.mjs) and has no field the
  API does not know (their TypeScript interfaces, unknown_fields.mjs), and
  objects broken on purpose fail both.
- Each attnroll container's configuration (its ConfigMap's ATTNROLL_*
  variables and its arguments) names only real flags and is accepted by the
  real attnroll-server, which starts with it (listen addresses moved to
  loopback) and answers health; its resources follow from it (CPUs = workers,
  memory = budget + gRPC memory + base), terminationGracePeriodSeconds is
  above preStop + the drain deadline, its secrets are mounted where its flags
  point.
- The sidecar binds where the kubelet's gRPC probes reach it and keeps other
  pods off its gRPC port; the pool's headless service, PDB, HPA (through the
  adapter's rule names), NetworkPolicy and monitors select what they mean to,
  and its connections have a maximum age.

Run: /usr/bin/python3 tests/deploy/manifests_test.py --bin-dir BUILD_DIR
(npm installs the checks' packages into BUILD_DIR/deploy-node the first time.)
"""

import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_testutil as du  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
import e2e_harness  # noqa: E402  (take_bin_dir)

BIN_DIR = None
MIB = 1 << 20
# The process's own memory beside the budget and gRPC's quota: about 50 MB at
# start (README, "Memory you can budget"); a container is given at least this.
BASE_MIB = 64
API_SERVICE = "attnroll.v1.AttnrollService"


def quantity_bytes(q):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(q))
    if not m:
        raise AssertionError("memory quantity %r" % q)
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def cpu_count(q):
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def objects_by_kind():
    out = {}
    for path, obj in du.kubernetes_objects():
        out.setdefault(obj["kind"], []).append((path, obj))
    return out


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


class Pod:
    """An attnroll container in a Deployment, with its resolved configuration."""

    def __init__(self, path, deployment, configmaps):
        self.path = path
        self.deployment = deployment
        self.spec = deployment["spec"]["template"]["spec"]
        self.labels = deployment["spec"]["template"]["metadata"]["labels"]
        self.container = next(c for c in self.spec["containers"]
                              if c["image"].split(":")[0].endswith("attnroll"))
        self.env = {}
        for src in self.container.get("envFrom", []):
            name = src["configMapRef"]["name"]
            self.env.update(configmaps[name]["data"])
        for e in self.container.get("env", []):
            if "value" in e:
                self.env[e["name"]] = e["value"]
        self.args = self.container.get("args", [])

    def flag_args(self):
        """{flag: value} of --flag=value arguments."""
        out = {}
        for a in self.args:
            m = re.fullmatch(r"--([a-z0-9-]+)=(.*)", a)
            if not m:
                raise AssertionError("%s: argument %r is not --flag=value" % (self.path, a))
            out[m.group(1)] = m.group(2)
        return out

    def port(self, name):
        return next(p["containerPort"] for p in self.container["ports"] if p["name"] == name)

    def setting(self, flag):
        """The value of a flag: argument, else variable (else None)."""
        args = self.flag_args()
        if flag in args:
            return args[flag]
        return self.env.get("ATTNROLL_" + flag.upper().replace("-", "_"))


class ManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server_bin = os.path.join(BIN_DIR, "attnroll-server")
        cls.cli_bin = os.path.join(BIN_DIR, "attnroll")
        cls.kinds = objects_by_kind()
        configmaps = {o["metadata"]["name"]: o for _, o in cls.kinds.get("ConfigMap", [])}
        cls.pods = {}
        for path, d in cls.kinds["Deployment"]:
            pod = Pod(path, d, configmaps)
            cls.pods[os.path.basename(os.path.dirname(path))] = pod
        cls.server_flags = du.flags_in_help(cls.server_bin)

    # ---- files -------------------------------------------------------------

    def test_every_yaml_and_json_file_parses(self):
        docs = du.yaml_documents()
        files = {p for p, _, _ in docs}
        self.assertEqual(files, set(du.deploy_files(".yaml", ".yml")))
        self.assertGreaterEqual(len(files), 19)
        for path in du.deploy_files(".json"):
            with open(path) as f:
                self.assertIsInstance(json.load(f), dict, path)
        # The YAML inside the adapter's ConfigMap parses too.
        adapter = [o for _, o in self.kinds["ConfigMap"] if "config.yaml" in o.get("data", {})]
        self.assertEqual(len(adapter), 1)
        self.assertGreaterEqual(len(yaml.safe_load(adapter[0]["data"]["config.yaml"])["rules"]), 2)

    def test_yamllint_is_clean_with_the_committed_config(self):
        config = os.path.join(du.DEPLOY, ".yamllint.yaml")
        res = subprocess.run(["yamllint", "--strict", "-c", config, du.DEPLOY],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        # ... and the same config finds a duplicate key and trailing spaces.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write("a: 1\na: 2\nb: 3  \n")
            f.flush()
            res = subprocess.run(["yamllint", "--strict", "-c", config, f.name],
                                 capture_output=True, text=True, timeout=60)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("duplication of key", res.stdout)
        self.assertIn("trailing spaces", res.stdout)

    def test_every_kustomization_lists_the_files_beside_it(self):
        kustomizations = [p for p in du.deploy_files("kustomization.yaml")]
        self.assertEqual(len(kustomizations), 4)
        for k in kustomizations:
            with open(k) as f:
                doc = yaml.safe_load(f)
            d = os.path.dirname(k)
            # The Kubernetes objects beside it (plain Prometheus rule files and
            # their promtool tests are not for kustomize).
            objects = {os.path.basename(p) for p, _ in du.kubernetes_objects()
                       if os.path.dirname(p) == d}
            beside = sorted(f for f in os.listdir(d)
                            if f.endswith(".yaml") and f != "kustomization.yaml" and f in objects)
            self.assertEqual(sorted(doc["resources"]), beside, du.rel(k))

    # ---- schemas -----------------------------------------------------------

    def test_every_object_validates_against_the_kubernetes_schemas(self):
        objs = du.kubernetes_objects()
        kinds = sorted({o["kind"] for _, o in objs})
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                                 "NetworkPolicy", "PodDisruptionBudget", "PodMonitor",
                                 "PrometheusRule", "Service", "ServiceMonitor"])
        payload = [{"source": du.rel(p), "object": o} for p, o in objs]
        rc, out, err = du.run_node(BIN_DIR, "validate_k8s.mjs", payload)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(len([l for l in out.splitlines() if l.startswith("ok ")]), len(objs), out)

    def test_broken_objects_are_refused_by_the_schemas(self):
        pool = copy.deepcopy(self.pods["pool"].deployment)
        pool["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
        no_selector = copy.deepcopy(self.pods["pool"].deployment)
        del no_selector["spec"]["selector"]
        hpa = copy.deepcopy(self.kinds["HorizontalPodAutoscaler"][0][1])
        hpa["spec"]["metrics"][0]["pods"]["target"]["type"] = 7
        monitor = copy.deepcopy(self.kinds["ServiceMonitor"][0][1])
        monitor["spec"]["endpoints"][0]["interval"] = 15
        unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        payload = [{"source": s, "object": o} for s, o in
                   (("port", pool), ("selector", no_selector), ("hpa", hpa),
                    ("monitor", monitor), ("unknown", unknown))]
        rc, out, err = du.run_node(BIN_DIR, "validate_k8s.mjs", payload)
        self.assertEqual(rc, 1, out + err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 5, out)
        self.assertTrue(all(l.startswith("error ") for l in lines), out)
        self.assertIn("containerPort must be integer", lines[0])
        self.assertIn("must have required property selector", lines[1])
        self.assertIn("type must be string", lines[2])
        self.assertIn("interval must be string", lines[3])
        self.assertIn("no schema for example.com/v1 Widget", lines[4])

    def test_no_object_has_a_field_the_api_does_not_know(self):
        objs = du.kubernetes_objects()
        payload = [{"source": "%s %s" % (du.rel(p), o["metadata"]["name"]), "object": o}
                   for p, o in objs]
        rc, out, err = du.run_node(BIN_DIR, "unknown_fields.mjs", payload)
        self.assertEqual((rc, out), (0, ""), err)
        # A misspelt field, in a Deployment and in a ServiceMonitor, is named.
        pool = copy.deepcopy(self.pods["pool"].deployment)
        container = pool["spec"]["template"]["spec"]["containers"][0]
        container["readinesProbe"] = container.pop("readinessProbe")
        monitor = copy.deepcopy(self.kinds["ServiceMonitor"][0][1])
        monitor["spec"]["endpoints"][0]["tlsConfig"]["servername"] = "x"
        rc, out, err = du.run_node(BIN_DIR, "unknown_fields.mjs",
                                   [{"source": "pool", "object": pool},
                                    {"source": "monitor", "object": monitor}])
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(out, r"(?m)^pool: .*'\"readinesProbe\"' does not exist in type 'IContainer'")
        self.assertRegex(out, r"(?m)^monitor: .*'\"servername\"' does not exist")

    # ---- attnroll's configuration ------------------------------------------

    def test_every_setting_names_a_real_flag(self):
        self.assertIn("max-tokens", self.server_flags)
        accepted = du.accepted_flags(self.server_flags, du.PENDING_SERVER_FLAGS)
        used = set()
        for name, pod in self.pods.items():
            for var in pod.env:
                self.assertTrue(var.startswith("ATTNROLL_"), (name, var))
                flag = var[len("ATTNROLL_"):].lower().replace("_", "-")
                self.assertIn(flag, accepted, (name, var))
                used.add(flag)
            for flag in pod.flag_args():
                self.assertIn(flag, accepted, (name, flag))
                used.add(flag)
        pending = used - self.server_flags
        if pending:
            print("\nflags the manifests pass that this server does not have yet: %s"
                  % ", ".join(sorted(pending)), file=sys.stderr)
        # The check itself: once the server has TLS flags, a pending name it lacks is refused.
        self.assertNotIn("tls-cert", du.accepted_flags({"max-tokens", "tls-certificate"},
                                                       du.PENDING_SERVER_FLAGS))
        self.assertIn("tls-cert", du.accepted_flags({"max-tokens"}, du.PENDING_SERVER_FLAGS))

    def mounted_files(self):
        """Local stand-ins for the files the manifests mount (certificates made
        by tests/testutil/make_test_certs.sh, a token file): {mounted path:
        local path}, and the client's token file."""
        tmp = tempfile.mkdtemp(prefix="attnroll_manifests_")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", tmp]))
        subprocess.run([os.path.join(du.SRC, "tests", "testutil", "make_test_certs.sh"), tmp],
                       check=True, capture_output=True)
        token = "deploy-test-token-0123456789"
        tokens = os.path.join(tmp, "tokens")
        client_token = os.path.join(tmp, "client-token")
        for path, text in ((tokens, "deploy-test %s\n" % token), (client_token, token + "\n")):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
        return {"/etc/attnroll/tls/tls.crt": os.path.join(tmp, "server.pem"),
                "/etc/attnroll/tls/tls.key": os.path.join(tmp, "server.key"),
                "/etc/attnroll/tls/ca.crt": os.path.join(tmp, "ca.pem"),
                "/etc/attnroll/tokens/tokens": tokens}, client_token

    def test_the_real_server_accepts_each_configuration(self):
        files, client_token = self.mounted_files()
        for name, pod in self.pods.items():
            env = {k: v for k, v in pod.env.items()}
            # Tests listen on loopback only; mounted files are local stand-ins;
            # everything else as the manifest says.
            env["ATTNROLL_LISTEN"] = "127.0.0.1:0"
            env["ATTNROLL_METRICS_LISTEN"] = "127.0.0.1:0"
            flags = {f: v for f, v in pod.flag_args().items() if f in self.server_flags}
            for f, v in flags.items():
                if v.startswith("/etc/attnroll/"):
                    self.assertIn(v, files, "%s: --%s: no local stand-in" % (name, f))
                    flags[f] = files[v]
            args = ["--%s=%s" % (f, v) for f, v in flags.items()]
            cli_security = []
            if "tls-cert" in flags:
                cli_security += ["--tls-ca", files["/etc/attnroll/tls/ca.crt"],
                                 "--tls-server-name", "localhost"]
            if "token-file" in flags:
                cli_security += ["--token-file", client_token]
            proc = subprocess.Popen([self.server_bin] + args, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin")))
            try:
                line = proc.stdout.readline().strip()
                m = re.match(r"attnroll-server listening grpc=(127\.0\.0\.1:\d+) metrics=", line)
                if m is None:
                    proc.kill()
                    self.fail("%s: the server refused its configuration: %s"
                              % (name, proc.communicate(timeout=10)[1]))
                res = subprocess.run([self.cli_bin, "--server", m.group(1), "--timeout", "10"]
                                     + cli_security + ["info"],
                                     capture_output=True, text=True, timeout=30)
                self.assertEqual(res.returncode, 0, res.stderr)
                self.assertIn("workers:  %s " % pod.env["ATTNROLL_WORKERS"], res.stdout)
                self.assertIn("tokens %s," % pod.env["ATTNROLL_MAX_TOKENS"], res.stdout)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=30)
            self.assertEqual(proc.returncode, 0, err)
            self.assertNotIn("names no server flag", err)

    def test_resources_follow_from_the_settings(self):
        for name, pod in self.pods.items():
            workers = int(pod.setting("workers"))
            self.assertGreater(workers, 0, name)
            res = pod.container["resources"]
            self.assertEqual(cpu_count(res["requests"]["cpu"]), workers, name)
            self.assertEqual(cpu_count(res["limits"]["cpu"]), workers, name)
            memory = quantity_bytes(res["limits"]["memory"])
            self.assertEqual(quantity_bytes(res["requests"]["memory"]), memory, name)
            need = (int(pod.setting("max-memory-bytes")) + int(pod.setting("grpc-memory-bytes"))
                    + BASE_MIB * MIB)
            self.assertGreaterEqual(memory, need, "%s: %d MiB < %d MiB" % (name, memory // MIB,
                                                                          need // MIB))
            # Not wasteful either: within 256 MiB of it.
            self.assertLessEqual(memory, need + 256 * MIB, name)

    def test_the_grace_period_covers_the_drain(self):
        for name, pod in self.pods.items():
            grace = float(pod.setting("shutdown-grace-seconds"))
            pre = pod.container["lifecycle"]["preStop"]["exec"]["command"]
            self.assertEqual(pre[0], "sleep", name)
            total = float(pre[1]) + grace
            self.assertGreaterEqual(pod.spec["terminationGracePeriodSeconds"], total + 5, name)

    def test_ports_secrets_and_user(self):
        for name, pod in self.pods.items():
            listen = pod.setting("listen").split(",")
            self.assertEqual({int(a.rsplit(":", 1)[1]) for a in listen}, {pod.port("grpc")}, name)
            self.assertEqual(int(pod.setting("metrics-listen").rsplit(":", 1)[1]),
                             pod.port("metrics"), name)
            volumes = {v["name"]: v for v in pod.spec["volumes"]}
            mounts = {m["mountPath"]: volumes[m["name"]] for m in pod.container["volumeMounts"]}
            self.assertEqual(sorted(v["secret"]["secretName"] for v in mounts.values()),
                             ["attnroll-tls", "attnroll-tokens"], name)
            for flag, value in pod.flag_args().items():
                if value.startswith("/"):
                    owner = [m for m in mounts if value.startswith(m + "/")]
                    self.assertEqual(len(owner), 1, (name, flag, value))
            ctx = dict(pod.spec.get("securityContext", {}), **pod.container["securityContext"])
            self.assertEqual(ctx["runAsUser"], 10001, name)
            self.assertTrue(ctx["runAsNonRoot"], name)
            self.assertEqual(pod.spec["securityContext"]["fsGroup"], 10001, name)
            self.assertFalse(ctx["allowPrivilegeEscalation"], name)

    # ---- the sidecar -------------------------------------------------------

    def test_the_sidecar_is_probed_on_the_pod_ip_and_closed_to_other_pods(self):
        pod = self.pods["sidecar"]
        self.assertGreaterEqual(len(pod.spec["containers"]), 2)  # the model server beside it
        # The kubelet dials the pod IP: a loopback-only bind would fail every probe.
        for address in pod.setting("listen").split(","):
            self.assertIn(address.rsplit(":", 1)[0], ("0.0.0.0", "[::]"))
        port = pod.port("grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(pod.container[probe]["grpc"]["port"], port, probe)
        self.assertEqual(pod.container["readinessProbe"]["grpc"]["service"], API_SERVICE)
        policies = [o for p, o in self.kinds["NetworkPolicy"]
                    if selects(o["spec"]["podSelector"]["matchLabels"], pod.labels)]
        self.assertEqual(len(policies), 1)
        ingress = policies[0]["spec"]["ingress"]
        open_ports = [p["port"] for rule in ingress for p in rule.get("ports", [])]
        self.assertNotIn(port, open_ports)
        self.assertIn(pod.port("metrics"), open_ports)
        self.assertTrue(all(rule.get("ports") for rule in ingress))  # no rule opens every port

    # ---- the pool ----------------------------------------------------------

    def test_the_pool_probes_run_the_image_cli_against_loopback(self):
        pod = self.pods["pool"]
        global_flags = du.flags_in_help(self.cli_bin)
        health_flags = du.flags_in_help(self.cli_bin, "health")
        self.assertIn("server", global_flags)
        self.assertIn("service", health_flags)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            cmd = pod.container[probe]["exec"]["command"]
            self.assertEqual(cmd[0], "attnroll", probe)
            self.assertIn("health", cmd)
            at = cmd.index("health")
            before, after = cmd[1:at], cmd[at + 1:]
            for flags, known in ((before, global_flags), (after, health_flags)):
                accepted = du.accepted_flags(known, du.PENDING_CLI_FLAGS)
                for i in range(0, len(flags), 2):
                    self.assertTrue(flags[i].startswith("--"), (probe, flags))
                    self.assertIn(flags[i][2:], accepted, (probe, flags[i]))
            self.assertEqual(before[before.index("--server") + 1], "127.0.0.1:%d" % pod.port("grpc"))
            self.assertGreater(float(before[before.index("--timeout") + 1]), 0)
            self.assertLess(float(before[before.index("--timeout") + 1]),
                            pod.container[probe]["timeoutSeconds"])
        self.assertEqual(pod.container["readinessProbe"]["exec"]["command"][-2:],
                         ["--service", API_SERVICE])

    def test_the_pool_rebalances_scales_and_is_selected_by_what_serves_it(self):
        pod = self.pods["pool"]
        d = pod.deployment
        self.assertGreater(float(pod.setting("max-connection-age-seconds")), 0)
        self.assertGreater(float(pod.setting("max-connection-age-grace-seconds")), 0)
        self.assertEqual(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        # Headless service over the pool's pods, its ports naming the container's.
        services = self.kinds["Service"]
        self.assertEqual(len(services), 1)
        svc = services[0][1]
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertFalse(svc["spec"]["publishNotReadyAddresses"])
        self.assertTrue(selects(svc["spec"]["selector"], pod.labels))
        names = {p["name"] for p in pod.container["ports"]}
        for p in svc["spec"]["ports"]:
            self.assertIn(p["targetPort"], names)
        self.assertEqual(next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"),
                         pod.port("grpc"))
        # PDB and HPA over the same pods; the HPA never goes below what the PDB keeps.
        pdb = self.kinds["PodDisruptionBudget"][0][1]
        self.assertTrue(selects(pdb["spec"]["selector"]["matchLabels"], pod.labels))
        hpa = self.kinds["HorizontalPodAutoscaler"][0][1]
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["kind"], ref["name"]), ("Deployment", d["metadata"]["name"]))
        self.assertGreater(hpa["spec"]["minReplicas"], pdb["spec"]["maxUnavailable"])
        self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        # Its metrics are the names the adapter's rules publish.
        adapter = next(o for _, o in self.kinds["ConfigMap"] if "config.yaml" in o.get("data", {}))
        published = {r["name"]["as"] for r in yaml.safe_load(adapter["data"]["config.yaml"])["rules"]}
        wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
        self.assertEqual(wanted, published)
        # NetworkPolicy: gRPC from client namespaces, metrics from monitoring.
        policies = [o for _, o in self.kinds["NetworkPolicy"]
                    if selects(o["spec"]["podSelector"]["matchLabels"], pod.labels)]
        self.assertEqual(len(policies), 1)
        ports = {p["port"] for r in policies[0]["spec"]["ingress"] for p in r["ports"]}
        self.assertEqual(ports, {pod.port("grpc"), pod.port("metrics")})
        self.assertTrue(all(r.get("from") for r in policies[0]["spec"]["ingress"]))

    def test_monitors_select_the_metrics_ports_and_label_the_job(self):
        svc = self.kinds["Service"][0][1]
        sm = self.kinds["ServiceMonitor"][0][1]
        self.assertTrue(selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]))
        self.assertIn(sm["spec"]["endpoints"][0]["port"], {p["name"] for p in svc["spec"]["ports"]})
        pm = self.kinds["PodMonitor"][0][1]
        sidecar = self.pods["sidecar"]
        self.assertTrue(selects(pm["spec"]["selector"]["matchLabels"], sidecar.labels))
        self.assertIn(pm["spec"]["podMetricsEndpoints"][0]["port"],
                      {p["name"] for p in sidecar.container["ports"]})
        # The rules and the dashboard select job="attnroll".
        for endpoint in (sm["spec"]["endpoints"][0], pm["spec"]["podMetricsEndpoints"][0]):
            self.assertIn({"targetLabel": "job", "replacement": "attnroll"}, endpoint["relabelings"])
            self.assertEqual(endpoint["scheme"], "https")


if __name__ == "__main__":
    BIN_DIR, argv = e2e_harness.take_bin_dir(sys.argv)
    if not BIN_DIR:
        sys.exit("--bin-dir BUILD_DIR is required")
    unittest.main(argv=argv)
