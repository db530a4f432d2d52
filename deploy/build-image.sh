#!/usr/bin/env bash
# Build a minimal `aigw` container image FROM scratch: the release binary, the shared libraries
# it links (glibc, libgcc_s, libm) and a CA bundle — nothing else. No base image is pulled, so
# this works on machines without registry access.
#
#   deploy/build-image.sh [TAG]                      # default tag: aigw:dev; builds with cargo
#   AIGW_BIN=/path/to/aigw deploy/build-image.sh     # package a prebuilt binary, no cargo
#
# If an `aigw-mock` binary sits next to the aigw binary it is staged too, at /aigw-mock, so the
# same image can run a mock upstream: `docker run --entrypoint /aigw-mock IMAGE --addr 0.0.0.0:7777`.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-aigw:dev}"

if [[ -n "${AIGW_BIN:-}" ]]; then
  bin="$AIGW_BIN"
  [[ -x "$bin" ]] || {
    echo "build-image.sh: AIGW_BIN=$bin is not an executable file" >&2
    exit 1
  }
else
  cargo build --release --bin aigw
  bin=target/release/aigw
fi
mock="$(dirname "$bin")/aigw-mock"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/rootfs/data" "$stage/rootfs/etc/ssl/certs" "$stage/rootfs/tmp"
binaries=("$bin")
cp "$bin" "$stage/rootfs/aigw"
staged=("$stage/rootfs/aigw")
if [[ -x "$mock" ]]; then
  cp "$mock" "$stage/rootfs/aigw-mock"
  binaries+=("$mock")
  staged+=("$stage/rootfs/aigw-mock")
  echo "including $mock as /aigw-mock"
fi
# Stripping only makes the image smaller; go on without it.
for f in "${staged[@]}"; do
  strip "$f" 2>/dev/null || echo "note: could not strip $(basename "$f"); keeping its symbols" >&2
done
# The dynamic loader and every library the binaries need, at their absolute paths.
for b in "${binaries[@]}"; do
  { ldd "$b" || true; } | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$stage/rootfs$(dirname "$lib")"
  cp -L "$lib" "$stage/rootfs$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$stage/rootfs/etc/ssl/certs/"
cp deploy/Dockerfile "$stage/Dockerfile"
docker build -q -t "$tag" "$stage"
echo "built $tag"
