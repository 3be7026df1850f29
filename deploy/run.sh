#!/usr/bin/env bash
# Installs, builds and starts attnroll-server with built-in defaults:
# gRPC on 127.0.0.1:50051, metrics on 127.0.0.1:9464. Extra arguments go to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/build.sh --target attnroll-server attnroll
exec build/attnroll-server "$@"
