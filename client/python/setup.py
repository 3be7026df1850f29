"""Builds the attnroll package with its gRPC stubs, generated from the
repository's proto/ by protoc and grpc_python_plugin (Debian's
protobuf-compiler and protobuf-compiler-grpc), offline:

    python3 -m venv --system-site-packages venv
    venv/bin/pip install --no-index --no-build-isolation client/python

Runtime dependencies come from Debian (python3-grpcio, python3-protobuf,
python3-numpy; python3-torch for attnroll.capture, python3-pil and
python3-matplotlib for attnroll.render) and are visible in a venv made with
--system-site-packages. ATTNROLL_PROTO_DIR overrides where the protos are.
ATTNROLL_NATIVE_LIB names a built attnroll/_native.so (the build tree's
build/python/attnroll/_native.so) to install with the package: its fast
path for client-side head fusion (without it, numpy does the same work).
"""

import glob
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.environ.get("ATTNROLL_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))


class BuildWithStubs(build_py):
    """build_py, then protoc --python_out --grpc_out into the built package."""

    def run(self):
        super().run()
        protos = sorted(glob.glob(os.path.join(PROTO_DIR, "attnroll", "v1", "*.proto")))
        if not protos:
            raise SystemExit("no protos under %s (set ATTNROLL_PROTO_DIR)" % PROTO_DIR)
        plugin = shutil.which("grpc_python_plugin")
        protoc = shutil.which("protoc")
        if not plugin or not protoc:
            raise SystemExit("protoc and grpc_python_plugin are needed: apt-get install "
                             "protobuf-compiler protobuf-compiler-grpc")
        out = os.path.abspath(self.build_lib)
        os.makedirs(os.path.join(out, "attnroll", "v1"), exist_ok=True)
        subprocess.run([protoc, "--proto_path=" + PROTO_DIR, "--python_out=" + out,
                        "--grpc_out=" + out, "--plugin=protoc-gen-grpc=" + plugin] + protos,
                       check=True)
        open(os.path.join(out, "attnroll", "v1", "__init__.py"), "a").close()
        native = os.environ.get("ATTNROLL_NATIVE_LIB")
        if native:
            if not os.path.isfile(native):
                raise SystemExit("ATTNROLL_NATIVE_LIB: no such file: %s" % native)
            shutil.copy(native, os.path.join(out, "attnroll", "_native.so"))


setup(
    name="attnroll",
    version="0.1.0",
    description="Client of attnroll-server: attention rollout, flow and audits of transformer "
                "attention, with PyTorch capture helpers",
    packages=["attnroll"],
    python_requires=">=3.9",
    install_requires=["grpcio", "protobuf", "numpy"],
    extras_require={"torch": ["torch"], "render": ["Pillow", "matplotlib"]},
    cmdclass={"build_py": BuildWithStubs},
)
