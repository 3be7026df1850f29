"""Shared harness of the end-to-end tests in this directory: one real
`attnroll-server` per test class, driven through the `attnroll` CLI.

A test file puts its own directory on sys.path and imports this module:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import e2e_harness  # noqa: E402

    class MyTest(e2e_harness.ServerTestCase):
        ...

    if __name__ == "__main__":
        e2e_harness.main()

main() takes --bin-dir BUILD_DIR (or --bin-dir=BUILD_DIR; ATTNROLL_BIN_DIR
otherwise) off the command line and hands the rest to unittest.

ServerTestCase.setUpClass starts `attnroll-server --listen <listen>
--metrics-listen <metrics_listen> --workers 2 <server_flags...>` (listen:
127.0.0.1:0 unless the class says otherwise, e.g. "127.0.0.1:0,[::1]:0"),
reads the ports from its first stdout line ("attnroll-server listening
grpc=127.0.0.1:PORT[,[::1]:PORT...] metrics=127.0.0.1:PORT|none": `port` is the
first address's, `addresses` every one as HOST:PORT), keeps draining stdout and
logs stderr to a file in a per-class temporary directory.  tearDownClass sends
SIGTERM to a server that is still running and asserts that it exits 0 (a test
that stops the server itself, e.g. to check SIGTERM, leaves nothing to do), then
removes the temporary directory.  cli_ok / cli_invalid run the CLI and assert
that it succeeded / refused the input with INVALID_ARGUMENT; add_case_tests
turns a table of cases into test methods.  Uses the standard library and
numpy; the numpy reference of the suites is numpy_reference.py.
"""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np

BIN_DIR = os.environ.get("ATTNROLL_BIN_DIR")

SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 30.0

# --------------------------------------------------------------------------
# Command line: --bin-dir is ours, everything else goes to unittest.
# --------------------------------------------------------------------------


def take_bin_dir(argv):
    """Returns (bin_dir, argv without --bin-dir); bin_dir defaults to
    $ATTNROLL_BIN_DIR."""
    bin_dir = os.environ.get("ATTNROLL_BIN_DIR")
    rest = [argv[0]]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--bin-dir":
            if i + 1 >= len(argv):
                sys.exit("--bin-dir needs a value")
            bin_dir = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--bin-dir="):
            bin_dir = arg.split("=", 1)[1]
            i += 1
            continue
        rest.append(arg)
        i += 1
    return bin_dir, rest


def kill_all(procs):
    """Kills every process of `procs` still running and reaps it (a test's
    tearDown: benches and clients it started)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def main():
    """Entry point of a test file: --bin-dir, then unittest.main()."""
    global BIN_DIR
    BIN_DIR, argv = take_bin_dir(sys.argv)
    unittest.main(module="__main__", argv=argv)


# --------------------------------------------------------------------------
# The server and the CLI.
# --------------------------------------------------------------------------

_LISTENING_RE = re.compile(r"attnroll-server listening grpc=(\S+) metrics=(\S+)$")
_ADDRESS_RE = re.compile(r"(127\.0\.0\.1|\[[0-9a-fA-F:]+\]):(\d+)$")


class ServerTestCase(unittest.TestCase):
    """Base class: a server for the whole class, cli() to run the CLI on it."""

    # What subclasses may set.
    server_flags = ()                  # appended to the server's command line
    listen = "127.0.0.1:0"             # --listen; the first address must be 127.0.0.1
    metrics_listen = "127.0.0.1:0"     # or "none"; else metrics_port is required
    tmp_prefix = "attnroll_e2e_"
    cli_timeout_s = CLI_TIMEOUT_S
    server_stop_timeout_s = SERVER_STOP_TIMEOUT_S

    # What setUpClass sets.
    server = None
    port = None
    addresses = ()                     # every gRPC address, HOST:PORT, in --listen order
    metrics_port = None
    tmp = None
    server_log = None

    @classmethod
    def setUpClass(cls):
        if not BIN_DIR:
            raise RuntimeError("no build directory: pass --bin-dir BUILD_DIR or set "
                               "ATTNROLL_BIN_DIR")
        cls.server_bin = os.path.join(BIN_DIR, "attnroll-server")
        cls.cli_bin = os.path.join(BIN_DIR, "attnroll")
        for b in (cls.server_bin, cls.cli_bin):
            if not os.access(b, os.X_OK):
                raise RuntimeError("missing executable %s" % b)
        cls.tmp = tempfile.mkdtemp(prefix=cls.tmp_prefix)
        cls.server_log_path = os.path.join(cls.tmp, "server.stderr")
        cls.server_log = open(cls.server_log_path, "wb")
        cls.server = subprocess.Popen(
            [cls.server_bin, "--listen", cls.listen,
             "--metrics-listen", cls.metrics_listen, "--workers", "2"]
            + [str(f) for f in cls.server_flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=cls.server_log)
        lines = queue.Queue()
        cls.server_stdout = []

        def drain():
            # Keep reading so the server never blocks on a full pipe.
            for raw in iter(cls.server.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                cls.server_stdout.append(line)
                lines.put(line)
            lines.put(None)

        cls.drain_thread = threading.Thread(target=drain, daemon=True)
        cls.drain_thread.start()
        try:
            first = lines.get(timeout=SERVER_START_TIMEOUT_S)
        except queue.Empty:
            first = "<nothing within %.0f s>" % SERVER_START_TIMEOUT_S
        m = _LISTENING_RE.match(first) if first is not None else None
        addresses = [_ADDRESS_RE.match(a) for a in m.group(1).split(",")] if m else []
        ok = (m is not None and all(addresses)
              and len(addresses) == len(cls.listen.split(","))
              and addresses[0].group(1) == "127.0.0.1")
        if ok:
            cls.addresses = tuple(a.group(0) for a in addresses)
            cls.port = int(addresses[0].group(2))
            metrics = re.match(r"127\.0\.0\.1:(\d+)$", m.group(2))
            cls.metrics_port = int(metrics.group(1)) if metrics else None
            if cls.metrics_listen != "none" and cls.metrics_port is None:
                ok = False
        if not ok:
            cls._kill_server()
            stderr = cls._server_stderr()
            # tearDownClass does not run after a failed setUpClass.
            cls.server.stdout.close()
            cls.server_log.close()
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise RuntimeError(
                "attnroll-server did not announce its ports; first stdout line: %r;"
                " stderr:\n%s" % (first, stderr))

    @classmethod
    def _server_stderr(cls):
        """The tail of what the server wrote on stderr so far."""
        try:
            if not cls.server_log.closed:
                cls.server_log.flush()
            with open(cls.server_log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return "<unreadable>"

    @classmethod
    def _kill_server(cls):
        if cls.server is not None and cls.server.poll() is None:
            cls.server.kill()
            cls.server.wait(timeout=cls.server_stop_timeout_s)

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.server is not None and cls.server.poll() is None:
                cls.server.send_signal(signal.SIGTERM)
                try:
                    rc = cls.server.wait(timeout=cls.server_stop_timeout_s)
                except subprocess.TimeoutExpired:
                    cls._kill_server()
                    raise AssertionError(
                        "attnroll-server did not exit within %.0f s of SIGTERM"
                        % cls.server_stop_timeout_s)
                if rc != 0:
                    raise AssertionError(
                        "attnroll-server exited with %d after SIGTERM; stderr:\n%s"
                        % (rc, cls._server_stderr()))
            elif cls.server is not None and cls.server.returncode not in (0, None):
                raise AssertionError("attnroll-server died early with %d; stderr:\n%s"
                                     % (cls.server.returncode, cls._server_stderr()))
        finally:
            if cls.server is not None:
                cls.server.stdout.close()
            cls.server_log.close()
            if cls.tmp:
                shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------

    def setUp(self):
        self.assertIsNone(self.server.poll(),
                          "server is gone; stderr:\n" + self._server_stderr())

    def cli(self, *args, server=None):
        """Runs `attnroll --server ADDR ARGS...` (ADDR: this class's server
        unless given); returns the CompletedProcess (text mode)."""
        cmd = ([self.cli_bin, "--server", server or "127.0.0.1:%d" % self.port]
               + [str(a) for a in args])
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.cli_timeout_s, text=True)
        except subprocess.TimeoutExpired:
            self.fail("CLI timed out after %.0f s: %s" % (self.cli_timeout_s, " ".join(cmd)))

    def _write(self, name, arr):
        """Saves arr as TMP/name.npy; returns the path."""
        path = os.path.join(self.tmp, name + ".npy")
        np.save(path, arr)
        return path

    def cli_ok(self, name, args):
        """Runs the CLI with args and asserts exit 0 (the failure names the
        case, the command and both outputs); returns the CompletedProcess."""
        res = self.cli(*args)
        self.assertEqual(res.returncode, 0,
                         "CLI failed (%s)\ncmd: %s\nstdout:\n%s\nstderr:\n%s"
                         % (name, " ".join(str(a) for a in args), res.stdout, res.stderr))
        return res

    def load_float32(self, path, name):
        """np.load(path), asserted to be float32."""
        got = np.load(path)
        self.assertEqual(got.dtype, np.float32, name)
        return got

    def cli_invalid(self, name, args, exit_code=None, mention=None):
        """Runs the CLI with args and asserts that the input is refused: a
        non-zero exit (exit_code if given), INVALID_ARGUMENT (and mention if
        given) on stderr, and the server still up.  Returns the
        CompletedProcess."""
        res = self.cli(*args)
        self.assertNotEqual(res.returncode, 0,
                            "CLI accepted bad input (%s): %s\nstdout:\n%s"
                            % (name, " ".join(str(a) for a in args), res.stdout))
        if exit_code is not None:
            self.assertEqual(res.returncode, exit_code, "case %s:\n%s" % (name, res.stderr))
        self.assertIn("INVALID_ARGUMENT", res.stderr,
                      "case %s: stderr does not name INVALID_ARGUMENT:\n%s"
                      % (name, res.stderr))
        if mention is not None:
            self.assertIn(mention, res.stderr, "case %s" % name)
        self.assertIsNone(self.server.poll(), "server died on bad input " + name)
        return res


def add_case_tests(cls, cases, make_test):
    """Adds a method test_case_NAME to the test class cls for every entry
    (NAME, ...) of the table cases: make_test(index, *entry) returns the test
    function (index: the entry's position, e.g. to seed its generator)."""
    for index, case in enumerate(cases):
        test = make_test(index, *case)
        test.__name__ = "test_case_" + case[0]
        setattr(cls, test.__name__, test)
