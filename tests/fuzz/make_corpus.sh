#!/usr/bin/env bash
# Regenerates the seed corpus of every fuzz target into tests/fuzz/corpus/
# (seed-* files; crash-* files, the inputs of crashes found and fixed, are
# kept). Needs the fuzz tree (deploy/test-sanitizers.sh builds it in
# build-asan/, or pass its path) and Debian's /usr/bin/python3 with numpy.
#
#   tests/fuzz/make_corpus.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build-asan}"
corpus=tests/fuzz/corpus
cmake --build "$build" --target make_corpus
rm -f "$corpus"/*/seed-*
"$build/tests/fuzz/make_corpus" "$corpus"
/usr/bin/python3 tests/fuzz/make_npy_corpus.py "$corpus"
