#!/usr/bin/python3
"""The Dockerfile's runtime packages are the packages of the libraries the
built binaries link, no more and no fewer.

For attnroll-server and attnroll (the two binaries the image ships), the
shared libraries they name (NEEDED, from `objdump -p`) are resolved to files by
`ldd`, and each file to its Debian package by `dpkg -S`. That set must equal
the package list of the Dockerfile's runtime stage (its `apt-get install`): a
package missing there fails the test (the image would not start), and so does
one no binary needs (the runtime stage carries only runtime libraries). The
check is also run on a copy of the Dockerfile with one package taken out, and
must then fail naming it.

Run: /usr/bin/python3 tests/deploy/runtime_packages_test.py --bin-dir BUILD_DIR
"""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
import e2e_harness  # noqa: E402  (take_bin_dir)

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(SRC, "Dockerfile")
BIN_DIR = None
BINARIES = ("attnroll-server", "attnroll")


def needed_libraries(binary):
    """The sonames a binary names directly (its NEEDED entries)."""
    out = subprocess.run(["objdump", "-p", binary], check=True, capture_output=True,
                         text=True).stdout
    return [line.split()[1] for line in out.splitlines() if line.strip().startswith("NEEDED")]


def resolved_paths(binary):
    """soname -> path, as ldd resolves them for this binary."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) => (\S+) \(0x[0-9a-f]+\)", line)
        if m:
            paths[m.group(1)] = m.group(2)
        elif re.match(r"\s*/\S+ \(0x[0-9a-f]+\)", line):
            # The dynamic loader, named by its path: a binary that links
            # static archives calling into it (abseil, gRPC) names it directly.
            path = line.split()[0]
            paths[os.path.basename(path)] = path
        elif "not found" in line:
            raise AssertionError("%s: %s" % (binary, line.strip()))
    return paths


def candidates(path):
    """The path as ldd gave it, its real path, and their /usr-merged twins."""
    out = [path, os.path.realpath(path)]
    for p in list(out):
        if p.startswith("/usr/lib/"):
            out.append(p[len("/usr"):])
        elif p.startswith("/lib/"):
            out.append("/usr" + p)
    return out


def packages_of(paths):
    """path -> the Debian package owning it (one `dpkg -S` for all of them)."""
    tried = sorted({c for p in paths for c in candidates(p)})
    res = subprocess.run(["dpkg", "-S"] + tried, capture_output=True, text=True)
    owner = {}
    for line in res.stdout.splitlines():
        # "libgrpc29:amd64: /lib/x86_64-linux-gnu/libgrpc.so.29"
        pkgs, _, file = line.partition(": ")
        owner[file.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    out = {}
    for p in paths:
        found = [owner[c] for c in candidates(p) if c in owner]
        if not found:
            raise AssertionError("no Debian package owns %s (tried %s)" % (p, ", ".join(candidates(p))))
        out[p] = found[0]
    return out


_REQUIRED = {}


def required_packages(binaries):
    """package -> sorted sonames that make it needed (computed once per set of binaries)."""
    key = tuple(binaries)
    if key in _REQUIRED:
        return _REQUIRED[key]
    wanted = []
    for b in binaries:
        paths = resolved_paths(b)
        for soname in needed_libraries(b):
            if soname not in paths:
                raise AssertionError("%s: ldd does not resolve %s" % (b, soname))
            wanted.append((soname, paths[soname]))
    owner = packages_of([p for _, p in wanted])
    need = {}
    for soname, path in wanted:
        need.setdefault(owner[path], set()).add(soname)
    _REQUIRED[key] = {p: sorted(s) for p, s in need.items()}
    return _REQUIRED[key]


def runtime_packages(dockerfile_text):
    """The packages the runtime stage (FROM debian:bookworm-slim) of a Dockerfile
    installs with apt-get."""
    # Join continued lines, then take the stages.
    text = re.sub(r"\\\n", " ", dockerfile_text)
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    stages = re.split(r"(?m)^FROM\s+", text)
    slim = [st for st in stages if st.startswith("debian:bookworm-slim")]
    if len(slim) != 1:
        raise AssertionError("%d stages FROM debian:bookworm-slim, expected 1" % len(slim))
    packages = []
    for m in re.finditer(r"apt-get install ([^&\n]*)", slim[0]):
        packages += [w for w in m.group(1).split() if not w.startswith("-")]
    return packages


def check(dockerfile_text, binaries):
    """'' when the Dockerfile's runtime packages are the needed ones, else what differs."""
    listed = runtime_packages(dockerfile_text)
    need = required_packages(binaries)
    problems = []
    for p in sorted(set(need) - set(listed)):
        problems.append("missing %s (for %s)" % (p, ", ".join(need[p])))
    for p in sorted(set(listed) - set(need)):
        problems.append("not needed by any binary: %s" % p)
    if len(listed) != len(set(listed)):
        problems.append("listed twice: %s" % sorted({p for p in listed if listed.count(p) > 1}))
    return "; ".join(problems)


class RuntimePackagesTest(unittest.TestCase):
    def setUp(self):
        self.binaries = [os.path.join(BIN_DIR, b) for b in BINARIES]
        for b in self.binaries:
            self.assertTrue(os.access(b, os.X_OK), b)
        with open(DOCKERFILE) as f:
            self.dockerfile = f.read()

    def test_the_runtime_stage_installs_exactly_the_linked_libraries_packages(self):
        need = required_packages(self.binaries)
        # What ldd + dpkg -S find, by hand on Debian 12: prometheus-cpp, libzip,
        # OpenSSL, OpenBLAS, c-ares and re2 (gRPC's), the C/C++ runtime; and
        # none of gRPC, protobuf and abseil, which the Release build links
        # from their static archives (cmake/static_deps.cmake).
        for p in ("libprometheus-cpp-core1.0", "libprometheus-cpp-pull1.0", "libzip4",
                  "libssl3", "libopenblas0-pthread", "libc-ares2", "libre2-9",
                  "libstdc++6", "libc6"):
            self.assertIn(p, need)
        for p in ("libgrpc++1.51", "libgrpc29", "libprotobuf32", "libabsl20220623"):
            self.assertNotIn(p, need)
        self.assertEqual(check(self.dockerfile, self.binaries), "")

    def test_a_missing_package_is_named(self):
        listed = runtime_packages(self.dockerfile)
        self.assertGreaterEqual(len(listed), 5, listed)
        for gone in ("libssl3", "libzip4"):
            self.assertIn(gone, listed)
            broken = re.sub(r"(?m)^(\s*)%s \\\n" % re.escape(gone), "", self.dockerfile)
            self.assertNotEqual(broken, self.dockerfile, gone)
            self.assertRegex(check(broken, self.binaries), r"missing %s \(for " % re.escape(gone))

    def test_an_extra_package_is_named(self):
        extra = self.dockerfile.replace("      libzip4 \\\n", "      libzip4 \\\n      curl \\\n")
        self.assertNotEqual(extra, self.dockerfile)
        self.assertEqual(check(extra, self.binaries), "not needed by any binary: curl")

    def test_the_build_stage_is_not_the_runtime_stage(self):
        # The package list read is the runtime stage's: no compiler, no -dev package.
        listed = runtime_packages(self.dockerfile)
        self.assertFalse([p for p in listed if p.endswith("-dev") or p in ("build-essential", "cmake")],
                         listed)


if __name__ == "__main__":
    BIN_DIR, argv = e2e_harness.take_bin_dir(sys.argv)
    if not BIN_DIR:
        sys.exit("--bin-dir BUILD_DIR is required")
    unittest.main(argv=argv)
