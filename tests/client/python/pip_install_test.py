#!/usr/bin/python3
"""`pip install client/python` works offline into a venv made with
--system-site-packages (Debian's grpcio, protobuf, numpy seen through it), and
the installed package carries its generated stubs, and, with
ATTNROLL_NATIVE_LIB naming the build's attnroll/_native.so, its native fast
path (which then loads and fuses like numpy); a wrong path stops the install
by name.

Run: /usr/bin/python3 tests/client/python/pip_install_test.py SOURCE_DIR [NATIVE_LIB|none]
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.path.abspath(sys.argv.pop(1)) if len(sys.argv) > 1 else os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", ".."))
NATIVE = sys.argv.pop(1) if len(sys.argv) > 1 else "none"  # "none": a tree without it

CHECK = r"""
import attnroll, numpy as np
from attnroll.v1 import attnroll_pb2, attnroll_pb2_grpc
from attnroll import fusion, native
assert "site-packages" in attnroll.__file__, attnroll.__file__
import sys
assert native.available() == (sys.argv[1] == "1"), native.available()
assert hasattr(attnroll_pb2_grpc, "AttnrollServiceStub")
x = np.full((1, 2, 3, 3), 1 / 3, np.float32)
print(float(fusion.fuse_layer(x, [1.0, 3.0], 0).sum()))
"""


class PipInstallTest(unittest.TestCase):
    def test_offline_install_into_a_venv(self):
        tmp = tempfile.mkdtemp(prefix="attnroll_pip_")
        self.addCleanup(shutil.rmtree, tmp, True)
        # A copy, so the build leaves nothing in the source tree.
        pkg = os.path.join(tmp, "pkg")
        shutil.copytree(os.path.join(SOURCE, "client", "python"), pkg,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        venv = os.path.join(tmp, "venv")
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                       check=True)
        env = dict(os.environ, ATTNROLL_PROTO_DIR=os.path.join(SOURCE, "proto"),
                   PIP_NO_INDEX="1", PYTHONPATH="")
        pip = [os.path.join(venv, "bin", "pip"), "install", "--no-index", "--no-build-isolation",
               pkg]
        res = subprocess.run(pip, env=dict(env, ATTNROLL_NATIVE_LIB=os.path.join(tmp, "nothing.so")),
                             capture_output=True, text=True, timeout=300)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("ATTNROLL_NATIVE_LIB: no such file: " + os.path.join(tmp, "nothing.so"),
                      res.stdout + res.stderr)
        if NATIVE != "none":
            env["ATTNROLL_NATIVE_LIB"] = NATIVE
        res = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        res = subprocess.run([os.path.join(venv, "bin", "python"), "-c", CHECK,
                              "0" if NATIVE == "none" else "1"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=tmp)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(float(res.stdout), 3.0)  # one fused head of rows summing to 1


if __name__ == "__main__":
    unittest.main()
