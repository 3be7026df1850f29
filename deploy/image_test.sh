#!/usr/bin/env bash
# The container image, built and run as CI can: no registry, no Docker daemon,
# and no `podman run` (the OCI runtime cannot set up cgroups on these machines).
#
#  1. Base images: `debootstrap --variant=minbase bookworm` makes a Debian 12 root
#     filesystem once (cached as a tarball); `podman import` turns it into the two
#     images the Dockerfile names, debian:bookworm and debian:bookworm-slim (the
#     latter without docs, man pages and locales, as Debian's slim images are), so
#     the Dockerfile stays the standard one.
#  2. `podman build --isolation chroot` builds the Dockerfile unchanged. By default
#     with the binaries of BUILD_DIR (stripped copies), passed as the Dockerfile's
#     prebuilt-binaries context (its target prebuilt): CI has just built and
#     tested them, and compiling them again in the build stage would cost minutes
#     on a fresh machine (the build dependencies' download and install, then the
#     server, the CLI and the unit tests compiled). ATTNROLL_IMAGE_FROM_SOURCE=1
#     builds the build stage instead (it compiles and runs the unit tests; podman's
#     layer cache and the ccache mount make a rebuild cheap).
#  3. `podman create` + `podman export` give the runtime image's filesystem; the
#     server is started in it with `chroot --userspec` as the image's user, with
#     the image's entrypoint and environment (listen addresses moved to loopback).
#  4. From outside, on loopback: `attnroll health` (the host's CLI and the image's
#     own, as its HEALTHCHECK runs it), an Explain checked against its closed form,
#     and /metrics; then SIGTERM and exit 0. The image's metadata (user, ports,
#     healthcheck, entrypoint) and its libraries (`ldd`: nothing missing) are checked.
#
# Usage: deploy/image_test.sh [BUILD_DIR]    (BUILD_DIR: the host's build, default build/)
# BUILD_DIR must be a Debian 12 build of this tree (deploy/build.sh); with
# ATTNROLL_IMAGE_FROM_SOURCE=1 only its CLI is used, from outside.
# Needs root (or sudo -n), debootstrap and podman (deploy/install-deps.sh).
# Caches under ATTNROLL_CACHE_DIR (default ~/.cache/attnroll). If ATTNROLL_HEAVY_LOCK
# names a file, the debootstrap and the image build run under `flock` on it.
# Prints the time of each step and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)
BUILD=$(cd "${1:-build}" && pwd)
CACHE=${ATTNROLL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/attnroll}
IMAGE=localhost/attnroll:ci
BUILD_IMAGE=localhost/attnroll-build:ci
MIRROR=${ATTNROLL_DEBIAN_MIRROR:-http://deb.debian.org/debian}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "image_test: needs root or passwordless sudo (debootstrap, podman, chroot)" >&2
    exit 1
  fi
fi
LOCK_WAIT=0  # seconds spent waiting for ATTNROLL_HEAVY_LOCK (not counted in the steps)
heavy() {
  if [ -z "${ATTNROLL_HEAVY_LOCK:-}" ]; then "$@"; return; fi
  local fd t rc=0
  exec {fd}>>"$ATTNROLL_HEAVY_LOCK"
  t=$(date +%s.%N)
  flock "$fd"
  LOCK_WAIT=$(awk -v a="$t" -v b="$(date +%s.%N)" -v w="$LOCK_WAIT" 'BEGIN { print w + b - a }')
  "$@" || rc=$?
  exec {fd}>&-
  return "$rc"
}

T0=$(date +%s.%N)
last=$T0
COUNTED_WAIT=0
step() {  # step NAME: prints the time since the previous step, less any wait for the lock
  local now
  now=$(date +%s.%N)
  awk -v a="$last" -v b="$now" -v n="$1" -v w="$LOCK_WAIT" -v c="$COUNTED_WAIT" \
    'BEGIN { printf "image_test: %-34s %6.1f s\n", n, b - a - (w - c) }'
  COUNTED_WAIT=$LOCK_WAIT
  last=$now
}

WORK=$(mktemp -d /tmp/attnroll-image.XXXXXX)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" || true; fi
  $SUDO podman rm -f attnroll-image-test >/dev/null 2>&1 || true
  $SUDO rm -rf "$WORK"
}
trap cleanup EXIT

# ---- 1. base images ---------------------------------------------------------
mkdir -p "$CACHE"
BASE_TAR="$CACHE/debian-bookworm-minbase.tar"
SLIM_TAR="$CACHE/debian-bookworm-slim.tar"
if [ ! -s "$BASE_TAR" ] || [ ! -s "$SLIM_TAR" ]; then
  root="$WORK/rootfs"
  heavy $SUDO debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  # The sources of Debian's own images: the release, its updates and security.
  $SUDO rm -f "$root/etc/apt/sources.list"
  $SUDO tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  $SUDO rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  $SUDO tar -C "$root" --numeric-owner -cf "$BASE_TAR.tmp" .
  # Slim: what Debian's slim images leave out, and a dpkg configuration that
  # keeps it out of later installs.
  $SUDO tee "$root/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  $SUDO find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  $SUDO rm -rf "$root"/usr/share/man/* "$root"/usr/share/groff/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/lintian/* "$root"/usr/share/linda/*
  $SUDO tar -C "$root" --numeric-owner -cf "$SLIM_TAR.tmp" .
  $SUDO mv "$BASE_TAR.tmp" "$BASE_TAR"
  $SUDO mv "$SLIM_TAR.tmp" "$SLIM_TAR"
  $SUDO rm -rf "$root"
  step "debootstrap (cold)"
else
  step "debootstrap (cached tarballs)"
fi
# Import a tarball under the name the Dockerfile uses, unless that image was
# imported from this very tarball (its digest is the image's label).
import_base() {
  local tar=$1 name=$2 sum have
  sum=$(sha256sum "$tar" | cut -c1-64)
  have=$($SUDO podman image inspect --format '{{index .Labels "attnroll.base-tarball"}}' "$name" 2>/dev/null || true)
  if [ "$have" != "$sum" ]; then
    $SUDO podman import --quiet --change "LABEL attnroll.base-tarball=$sum" --change 'CMD ["bash"]' \
      "$tar" "$name" >/dev/null
  fi
}
import_base "$BASE_TAR" docker.io/library/debian:bookworm
import_base "$SLIM_TAR" docker.io/library/debian:bookworm-slim
step "podman import"

# ---- 2. the image -----------------------------------------------------------
FROM_SOURCE=${ATTNROLL_IMAGE_FROM_SOURCE:-0}
if [ "$FROM_SOURCE" = 1 ]; then
  # The build stage is tagged too, so its layers (the build dependencies above
  # all) stay as the cache of the next build, while the layers of earlier builds,
  # untagged once these tags move, are pruned: the machine keeps one build's worth.
  build_images() {
    $SUDO podman build --isolation chroot --pull=never --format docker --layers \
      --target build -t "$BUILD_IMAGE" -f Dockerfile . &&
    $SUDO podman build --isolation chroot --pull=never --format docker --layers \
      -t "$IMAGE" -f Dockerfile .
  }
  MODE="from source"
else
  # The host's binaries, stripped as the build stage strips its own.
  mkdir -p "$WORK/bin"
  for b in attnroll-server attnroll; do
    [ -x "$BUILD/$b" ] || { echo "image_test: no $BUILD/$b (build first: deploy/build.sh)" >&2; exit 1; }
    strip -o "$WORK/bin/$b" "$BUILD/$b"
  done
  build_images() {
    $SUDO podman build --isolation chroot --pull=never --format docker --layers \
      --target prebuilt --build-context prebuilt-binaries="$WORK/bin" \
      -t "$IMAGE" -f Dockerfile .
  }
  MODE="host binaries"
fi
heavy build_images >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; echo "image_test: podman build failed" >&2; exit 1; }
grep -E "^\[ *PASSED *\]" "$WORK/build.log" | sed 's/^/image_test: build stage: /' || true
if [ "$FROM_SOURCE" != 1 ] && grep -qE "^\[ *PASSED *\]|Building CXX" "$WORK/build.log"; then
  echo "image_test: FAILED: the build stage ran although the host's binaries were given" >&2; exit 1
fi
$SUDO podman image prune -f >/dev/null
step "podman build ($MODE)"

# ---- 3. its filesystem ------------------------------------------------------
$SUDO podman create --name attnroll-image-test "$IMAGE" >/dev/null
ROOTFS="$WORK/image"
mkdir -p "$ROOTFS"
$SUDO podman export attnroll-image-test | $SUDO tar -C "$ROOTFS" --numeric-owner -xf -
# (podman rm says it cannot reach systemd to remove the healthcheck's timer
# where there is no systemd: a container never started has none.)
$SUDO podman rm attnroll-image-test >/dev/null 2>"$WORK/rm.log" \
  || { cat "$WORK/rm.log" >&2; exit 1; }
step "podman create + export"

fail() { echo "image_test: FAILED: $*" >&2; exit 1; }
inspect() { $SUDO podman image inspect --format "$1" "$IMAGE"; }
USER_SPEC=$(inspect '{{.Config.User}}')
ENTRYPOINT=$(inspect '{{join .Config.Entrypoint " "}}')
PORTS=$(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')
HEALTH=$(inspect '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}')
[ "$USER_SPEC" = "10001:10001" ] || fail "image user is '$USER_SPEC', expected 10001:10001"
grep -q '^attnroll:x:10001:10001:' "$ROOTFS/etc/passwd" || fail "no user attnroll (10001) in the image"
[ "$ENTRYPOINT" = "attnroll-server" ] || fail "entrypoint is '$ENTRYPOINT'"
for p in 50051/tcp 9464/tcp; do
  case " $PORTS " in *" $p "*) ;; *) fail "port $p not exposed (exposed: $PORTS)";; esac
done
case "$HEALTH" in *"attnroll --server 127.0.0.1:50051 --timeout 2 health") ;;
  *) fail "healthcheck is '$HEALTH'";; esac
# With the host's binaries: those very files are in the image.
if [ "$FROM_SOURCE" != 1 ]; then
  for b in attnroll-server attnroll; do
    cmp -s "$WORK/bin/$b" "$ROOTFS/usr/local/bin/$b" || fail "/usr/local/bin/$b is not the host's $b"
  done
fi
# Every library the binaries need is in the image.
for b in attnroll-server attnroll; do
  out=$($SUDO chroot "$ROOTFS" ldd "/usr/local/bin/$b")
  if echo "$out" | grep -q "not found"; then fail "$b in the image: $(echo "$out" | grep 'not found')"; fi
done
# The user cannot change the binaries.
if $SUDO chroot --userspec="$USER_SPEC" "$ROOTFS" sh -c 'test -w /usr/local/bin/attnroll-server'; then
  fail "the image's user can write its binaries"
fi

# ---- 4. run it --------------------------------------------------------------
# The image's environment, with its listen addresses moved to loopback (this
# chroot shares the machine's network), port 0 each.
mapfile -t IMAGE_ENV < <(inspect '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
grep -qx 'ATTNROLL_LISTEN=0.0.0.0:50051' <(printf '%s\n' "${IMAGE_ENV[@]}") \
  || fail "the image does not set ATTNROLL_LISTEN=0.0.0.0:50051"
RUN_ENV=("${IMAGE_ENV[@]}" ATTNROLL_LISTEN=127.0.0.1:0 ATTNROLL_METRICS_LISTEN=127.0.0.1:0 ATTNROLL_WORKERS=2)
mkfifo "$WORK/stdout"
# A private mount namespace: /proc and /dev inside the image go away with the server.
$SUDO unshare --mount --propagation private sh -c '
  root=$1; shift; userspec=$1; shift
  mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
  exec env -i "$@" chroot --userspec="$userspec" "$root" attnroll-server' \
  sh "$ROOTFS" "$USER_SPEC" "${RUN_ENV[@]}" >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
exec 3<"$WORK/stdout"
read -r -t 30 line <&3 || fail "no listening line; stderr: $(cat "$WORK/stderr")"
[[ "$line" =~ ^attnroll-server\ listening\ grpc=127\.0\.0\.1:([0-9]+)\ metrics=127\.0\.0\.1:([0-9]+)$ ]] \
  || fail "unexpected first line '$line'"
GRPC_PORT=${BASH_REMATCH[1]}
METRICS_PORT=${BASH_REMATCH[2]}
# The server runs as the image's user.
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$SERVER_PID/status")
[ "$uid" = "10001" ] || fail "the server runs as uid $uid"
step "start in the image (chroot)"

out=$("$BUILD/attnroll" --server "127.0.0.1:$GRPC_PORT" --timeout 10 health)
[ "$out" = "SERVING" ] || fail "health from outside: '$out'"
out=$($SUDO chroot --userspec="$USER_SPEC" "$ROOTFS" attnroll --server "127.0.0.1:$GRPC_PORT" \
      --timeout 10 health --service attnroll.v1.AttnrollService)
[ "$out" = "SERVING" ] || fail "health with the image's own CLI: '$out'"
# An Explain from outside: uniform attention over n = 5 tokens, 2 layers, 2 heads,
# residual 0.5: R = 0.25 I + 0.75 U, so row 0 is [0.4, 0.15, 0.15, 0.15, 0.15].
/usr/bin/python3 -c "import numpy as np; np.save('$WORK/att.npy', np.full((2, 2, 5, 5), 0.2, np.float32))"
"$BUILD/attnroll" --server "127.0.0.1:$GRPC_PORT" --timeout 30 explain --attention "$WORK/att.npy" \
  --out "$WORK/map.npy" >/dev/null
/usr/bin/python3 -c "
import numpy as np, sys
m = np.load('$WORK/map.npy')
want = np.array([[0.4, 0.15, 0.15, 0.15, 0.15]], np.float32)
sys.exit(0 if m.shape == want.shape and np.allclose(m, want, atol=1e-6) else 'map %r' % m)" \
  || fail "Explain through the image"
metrics=$(/usr/bin/python3 -c "
import urllib.request
print(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics', timeout=10).read().decode())")
grep -qE '^attnroll_passes_total\{code="OK",rpc="Explain"\} 1$' <<<"$metrics" || fail "/metrics: no OK Explain pass"
grep -qE '^attnroll_build_info\{version="[0-9.]+"\} 1$' <<<"$metrics" || fail "/metrics: no build info"
grep -qE '^attnroll_worker_queue_capacity 256$' <<<"$metrics" || fail "/metrics: no queue capacity"
step "health, Explain, /metrics"

$SUDO kill -TERM "$SERVER_PID"
rc=0
wait "$SERVER_PID" || rc=$?
SERVER_PID=""
[ "$rc" -eq 0 ] || fail "exit $rc after SIGTERM; stderr: $(cat "$WORK/stderr")"
grep -q "INFO stopped" "$WORK/stderr" || fail "no 'stopped' log line"
step "SIGTERM, exit 0"
awk -v a="$T0" -v b="$(date +%s.%N)" -v w="$LOCK_WAIT" \
  'BEGIN { printf "image_test: %-34s %6.1f s (and %.1f s waiting for the lock)\n", "total", b - a - w, w }'
echo "image_test: 1 passed, 0 failed"
