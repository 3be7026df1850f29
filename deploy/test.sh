#!/usr/bin/env bash
# Installs, builds and runs every test (unit, in-process server, end to end with
# a real attnroll-server process, deploy/ checks) in the Release tree, then
# builds the container image from the Release binaries and runs the server in
# it (deploy/image_test.sh; needs root or sudo -n; ATTNROLL_SKIP_IMAGE_TEST=1
# leaves it out), then the sanitizer stages (deploy/test-sanitizers.sh: the
# suite again under ASan+UBSan, the fuzz targets, the runtime under TSan). Each stage prints a banner and its wall time. Exits non-zero
# on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
total_start=$(date +%s)
source deploy/stage.sh  # stage NAME COMMAND...
stage "release: install and build" deploy/build.sh
stage "release: ctest" ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600
if [ "${ATTNROLL_SKIP_IMAGE_TEST:-0}" != 1 ]; then
  stage "image: build and run" deploy/image_test.sh build
fi
deploy/test-sanitizers.sh
echo "==== deploy/test.sh: $(( $(date +%s) - total_start )) s in all ===="
