# attnroll-server and the attnroll CLI on Debian 12.
#
#   docker build -t attnroll .          (or: podman build --format docker -t attnroll .)
#   docker run -p 50051:50051 -p 9464:9464 -e ATTNROLL_WORKERS=2 attnroll
#
# Stage 1 builds Release (as deploy/build.sh does) and runs the unit tests; a
# failing test fails the build. Stage 2 is debian:bookworm-slim with the
# shared libraries the two binaries link and nothing else (the list below is
# checked against `ldd` of the built binaries by tests/deploy/runtime_packages_test.py),
# run as the unprivileged user attnroll (uid 10001).
#
# Configuration: every server flag is also an environment variable,
# --max-tokens as ATTNROLL_MAX_TOKENS (attnroll-server --help); a flag given
# as an argument (`docker run attnroll --max-tokens 4096`) wins. The image
# listens on all interfaces (a container's loopback is unreachable from
# outside): gRPC on 50051, Prometheus /metrics on 9464.
#
# Health: the standard gRPC health service, probed with the CLI shipped here:
#   attnroll --server 127.0.0.1:50051 --timeout 2 health     (exit 0 when SERVING)
# HEALTHCHECK below runs it (Docker, or podman with --format docker); on
# Kubernetes use a grpc probe on port 50051 or this command as an exec probe
# (deploy/kubernetes/, deploy/README.md).
#
# Binaries built beforehand: a machine that has just built the project (Debian
# 12, as deploy/build.sh builds it) can put those binaries in the same runtime
# image instead of building them again; the build stage is then skipped:
#   podman build --target prebuilt --build-context prebuilt-binaries=DIR -t attnroll .
# DIR holds attnroll-server and attnroll (stripped or not); docker buildx takes
# the same options. deploy/image_test.sh builds the image this way in CI, after
# the host's build and its tests.

FROM debian:bookworm AS build
ENV DEBIAN_FRONTEND=noninteractive
# The build dependencies of deploy/install-deps.sh (without the Python test
# references and the benchmark library), and ccache for rebuilds.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ccache \
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc grpc-proto \
      libprotobuf-dev protobuf-compiler \
      libeigen3-dev libabsl-dev prometheus-cpp-dev \
      libgtest-dev libgmock-dev liblemon-dev libzip-dev libpng-dev libjpeg-dev \
      libssl-dev libcivetweb-dev libopenblas-pthread-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY server server
COPY client client
COPY tests tests
# The unit tests: the math, the runtime (flags, environment, pool, admission,
# logging), the session room and the audit report; no network, no Python.
# The compiler cache is a build cache mount: kept between builds on the same
# machine, never in an image layer.
ARG ATTNROLL_MARCH=x86-64-v3
RUN --mount=type=cache,target=/root/.cache/ccache \
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DATTNROLL_BUILD_BENCHMARKS=OFF \
          -DATTNROLL_MARCH="${ATTNROLL_MARCH}" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
 && cmake --build build -j"$(nproc)" --target attnroll-server attnroll \
          analysis_test audit_report_test runtime_test session_test \
 && for t in analysis/analysis_test analysis/audit_report_test runtime/runtime_test \
             session/session_test; do \
      build/tests/$t --gtest_brief=1 || exit 1; \
    done \
 && strip build/attnroll-server build/attnroll

# The runtime: everything but the binaries.
FROM debian:bookworm-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# Runtime libraries: the Debian packages of the libraries attnroll-server and
# attnroll link (one a line; tests/deploy/runtime_packages_test.py derives the
# same set from ldd + dpkg -S and fails on a missing or an extra one).
# gRPC, protobuf and abseil are linked from their static archives
# (cmake/static_deps.cmake), so none of their packages is here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libc-ares2 \
      libc6 \
      libcivetweb1 \
      libgcc-s1 \
      libjpeg62-turbo \
      libopenblas0-pthread \
      libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 \
      libpng16-16 \
      libre2-9 \
      libssl3 \
      libstdc++6 \
      libzip4 \
      zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 attnroll \
 && useradd --system --uid 10001 --gid attnroll --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin attnroll
USER 10001:10001
ENV ATTNROLL_LISTEN=0.0.0.0:50051 \
    ATTNROLL_METRICS_LISTEN=0.0.0.0:9464
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["attnroll", "--server", "127.0.0.1:50051", "--timeout", "2", "health"]
# SIGTERM drains: health NOT_SERVING, passes in flight get
# --shutdown-grace-seconds (10 s), then exit 0. Give the container more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["attnroll-server"]

# The runtime with binaries built beforehand (a named build context, see the top).
FROM runtime AS prebuilt
COPY --from=prebuilt-binaries attnroll-server attnroll /usr/local/bin/

# The default: the runtime with the build stage's binaries. (COPY writes them
# as root, whatever USER says: the image's user cannot change them.)
FROM runtime
COPY --from=build /src/build/attnroll-server /src/build/attnroll /usr/local/bin/
