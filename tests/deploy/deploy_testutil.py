"""Shared helpers of the tests of deploy/: its files, their YAML documents,
the Kubernetes objects among them, the npm packages of the checks (installed
into the build tree once, offline afterwards), and the server's flags as its
--help lists them.
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess

import yaml

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(SRC, "deploy")
NODE_SRC = os.path.join(SRC, "tests", "deploy", "node")

# Flags of the security work on the server (TLS, mutual TLS, tokens, TLS on
# the metrics port) and the CLI (the CA a client trusts). The manifests pass
# them already. While a binary has no TLS or token flag at all, the flag checks
# accept these names (and say so); once it has any, only the flags its --help
# lists are accepted, so a name that differs fails.
PENDING_SERVER_FLAGS = {"tls-cert", "tls-key", "tls-client-ca", "token-file",
                        "metrics-tls-cert", "metrics-tls-key", "metrics-tls-client-ca"}
PENDING_CLI_FLAGS = {"tls-ca"}


def accepted_flags(listed, pending):
    """The flags a check accepts: those --help lists, plus `pending` while
    --help lists no TLS or token flag."""
    has_security = any(f.startswith(("tls-", "token-", "metrics-tls-")) for f in listed)
    return set(listed) if has_security else set(listed) | set(pending)


def deploy_files(*suffixes):
    """Every file under deploy/ whose name ends with one of `suffixes`, sorted."""
    out = []
    for root, _, files in os.walk(DEPLOY):
        for f in files:
            if f.endswith(suffixes):
                out.append(os.path.join(root, f))
    return sorted(out)


def rel(path):
    return os.path.relpath(path, SRC)


def yaml_documents():
    """[(path, index, document)] of every YAML file under deploy/."""
    out = []
    for path in deploy_files(".yaml", ".yml"):
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    out.append((path, i, doc))
    return out


def kubernetes_objects():
    """[(path, object)] of every Kubernetes object under deploy/ (documents with
    apiVersion and kind, kustomize's Kustomization files excepted)."""
    return [(p, d) for p, _, d in yaml_documents()
            if isinstance(d, dict) and "apiVersion" in d and "kind" in d
            and not d["apiVersion"].startswith("kustomize.config.k8s.io/")]


def node_modules(build_dir):
    """The directory holding tests/deploy/node with its npm packages installed
    (`npm ci` from the committed lock file, once: later runs are offline while
    package.json and the lock file are unchanged)."""
    dest = os.path.join(os.path.abspath(build_dir), "deploy-node")
    os.makedirs(dest, exist_ok=True)
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(NODE_SRC, name), "rb") as f:
            digest.update(f.read())
    stamp = os.path.join(dest, "installed.sha256")
    with open(os.path.join(dest, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for f in glob.glob(os.path.join(NODE_SRC, "*")):
            if os.path.isfile(f):
                shutil.copy2(f, dest)
        have = ""
        if os.path.exists(stamp):
            with open(stamp) as f:
                have = f.read().strip()
        if have != digest.hexdigest() or not os.path.isdir(os.path.join(dest, "node_modules")):
            res = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                 cwd=dest, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                raise RuntimeError("npm ci in %s failed:\n%s%s" % (dest, res.stdout, res.stderr))
            with open(stamp, "w") as f:
                f.write(digest.hexdigest() + "\n")
    return dest


def run_node(build_dir, script, payload):
    """Runs tests/deploy/node/SCRIPT with `payload` as JSON on stdin; returns
    (exit code, stdout, stderr)."""
    dest = node_modules(build_dir)
    res = subprocess.run(["node", os.path.join(dest, script)], input=json.dumps(payload),
                         capture_output=True, text=True, cwd=dest, timeout=300)
    return res.returncode, res.stdout, res.stderr


def flags_in_help(binary, *args):
    """The --NAME options a --help text lists."""
    res = subprocess.run([binary] + list(args) + ["--help"], capture_output=True, text=True,
                         timeout=30)
    if res.returncode != 0:
        raise RuntimeError("%s --help: exit %d" % (binary, res.returncode))
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", res.stdout))
