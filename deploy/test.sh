#!/usr/bin/env bash
# Installs, builds and runs every test (unit, in-process server, end to end with
# a real attnroll-server process). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
