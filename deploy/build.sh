#!/usr/bin/env bash
# Installs missing Debian packages and builds attnroll in Release into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
# Ninja for a new tree (an existing tree keeps the generator it was made with):
# it keeps both cores busy where make waits between targets.
export CMAKE_GENERATOR="${CMAKE_GENERATOR:-Ninja}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" "$@"
