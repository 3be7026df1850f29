#!/usr/bin/env bash
# Installs the Debian 12 packages attnroll needs to build, test and run.
# Calls apt only when something is missing, so a warm machine pays nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc grpc-proto
  libprotobuf-dev protobuf-compiler
  libeigen3-dev libabsl-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy python3-grpcio python3-protobuf
  # OpenBLAS: the rollout's matrix products (server/analysis/blas.cc, the pthread
  # build: safe to call from several threads); numpy's BLAS in the benchmarks too.
  libopenblas0-pthread libopenblas-pthread-dev
  # LEMON: NetworkSimplex for the exact earth mover's distance (built into the
  # server), and Preflow as the independent exact check of attention flow in the
  # tests; networkx: the flow reference implementation's library (tests, bench).
  liblemon-dev python3-networkx
  # Comparison metrics tests: scipy (spearmanr, kendalltau, pearsonr, jensenshannon,
  # wasserstein_distance, linprog, ndimage.uniform_filter) as the independent reference.
  python3-scipy
  # .npz reading in client/npy (np.savez, np.savez_compressed): zip archives via libzip.
  libzip-dev
  # Pictures (client/render): libpng writes and reads PNG, libjpeg reads JPEG. The colour
  # tables are generated from matplotlib (client/render/gen_colormaps.py) and checked
  # against it; the picture tests decode PNGs with Pillow.
  libpng-dev libjpeg-dev python3-pil
  # Real-model reproduction test (tests/e2e/vit_reproduction_test.py): torchvision's ViT-B/16.
  python3-torch python3-torchvision
  # The Python package (client/python): matplotlib (and PIL above) for its pictures; venv,
  # pip, setuptools and wheel for the offline `pip install client/python` test; openssl
  # makes the certificate of its TLS test. (grpc_python_plugin is in protobuf-compiler-grpc.)
  python3-matplotlib python3-venv python3-pip python3-setuptools python3-wheel
  openssl
  # TLS: OpenSSL's headers and libraries (certificate and key checks, the metrics port's TLS,
  # token digests). libssl-dev also at run time: Debian's civetweb (the metrics endpoint)
  # loads OpenSSL as "libssl.so"/"libcrypto.so", names only libssl-dev provides. civetweb's
  # headers for its callbacks; the openssl command makes the tests' certificates.
  libssl-dev libcivetweb-dev openssl
  # Sanitizer trees and libFuzzer targets (deploy/test-sanitizers.sh, tests/fuzz/):
  # clang 14 and its runtimes (ASan, UBSan, TSan, libFuzzer).
  clang-14 libclang-rt-14-dev
  # deploy/: the image built and run without a registry (deploy/image_test.sh: debootstrap
  # base images, podman build/create/export); manifests, rules and dashboards checked
  # (tests/deploy/: PyYAML, yamllint, promtool, the exposition parser of prometheus_client).
  # promtool also lints the scraped /metrics text in tests/e2e/load_test.py.
  debootstrap podman
  python3-yaml yamllint prometheus python3-prometheus-client
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the schema and PromQL checks of tests/deploy/ and buf curl in
# tests/e2e/buf_curl_test.py (their npm packages are installed by the tests into the build tree).
# A machine with Node.js from elsewhere keeps it.
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
