#!/usr/bin/env bash
# Installs, builds and runs every test (unit, in-process server, end to end with
# a real attnroll-server process, deploy/ checks), then builds the container image
# and runs the server in it (deploy/image_test.sh; needs root or sudo -n; set
# ATTNROLL_SKIP_IMAGE_TEST=1 to leave it out). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
if [ "${ATTNROLL_SKIP_IMAGE_TEST:-0}" != 1 ]; then
  deploy/image_test.sh build
fi
