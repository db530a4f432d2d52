#!/usr/bin/env bash
# Build a minimal `aigw` container image FROM scratch: the release binary, the shared libraries
# it links (glibc, libgcc_s, libm) and a CA bundle — nothing else. No base image is pulled, so
# this works on machines without registry access.
#
#   deploy/build-image.sh [TAG]        # default tag: aigw:dev
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-aigw:dev}"

cargo build --release --bin aigw
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/rootfs/data" "$stage/rootfs/etc/ssl/certs" "$stage/rootfs/tmp"
cp target/release/aigw "$stage/rootfs/aigw"
strip "$stage/rootfs/aigw"
# The dynamic loader and every library the binary needs, at their absolute paths.
ldd target/release/aigw | grep -o '/[^ ]*' | while read -r lib; do
  mkdir -p "$stage/rootfs$(dirname "$lib")"
  cp -L "$lib" "$stage/rootfs$lib"
done
cp /etc/ssl/certs/ca-certificates.crt "$stage/rootfs/etc/ssl/certs/"
cp deploy/Dockerfile "$stage/Dockerfile"
docker build -q -t "$tag" "$stage"
echo "built $tag"
