#!/usr/bin/env bash
# Installs the Debian 12 packages attnroll needs to build, test and run.
# Calls apt only when something is missing, so a warm machine pays nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
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
  # The pictures of `attnroll monitor --png` (client/cli/map_png.cc), and PIL to decode them in
  # tests/e2e/monitor_test.py.
  libpng-dev python3-pil
  # Real-model reproduction test (tests/e2e/vit_reproduction_test.py): torchvision's ViT-B/16.
  python3-torch python3-torchvision
  # The Python package (client/python): matplotlib (and PIL above) for its pictures; venv,
  # pip, setuptools and wheel for the offline `pip install client/python` test; openssl
  # makes the certificate of its TLS test. (grpc_python_plugin is in protobuf-compiler-grpc.)
  python3-matplotlib python3-venv python3-pip python3-setuptools python3-wheel
  openssl
  # promtool: lints the scraped /metrics text in tests/e2e/load_test.py, checks the alert rules
  # of live monitoring and runs their unit tests (deploy/prometheus/drift-rules*.yaml).
  prometheus
  # Pictures (client/render): libpng writes and reads PNG, libjpeg reads JPEG. The colour
  # tables are generated from matplotlib (client/render/gen_colormaps.py) and checked
  # against it; the picture tests decode PNGs with Pillow.
  libpng-dev libjpeg-dev python3-matplotlib python3-pil
)

# npm (installs @bufbuild/buf for tests/e2e/buf_curl_test.py). Debian's npm package,
# unless an npm is already there (NodeSource's nodejs ships its own and conflicts with it).
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
