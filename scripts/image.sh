#!/usr/bin/env bash
# `make image`: the container image warpdrive:VERSION from deploy/container/Containerfile and
# the package `make package` built, with podman (installed if missing). The build context is
# a directory holding just those two files. BASE=IMAGE picks the base image.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/debian/warpdrive_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "image: no package in target/debian; run make package" >&2; exit 1; }
. scripts/need-podman.sh
version=$(basename "$deb" | cut -d_ -f2 | cut -d- -f1)
ctx=$(mktemp -d /tmp/wd-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp deploy/container/Containerfile "$ctx/"
cp "$deb" "$ctx/warpdrive.deb"
args=()
[ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
podman --runtime runc build --quiet --network=host "${args[@]}" -t "warpdrive:$version" "$ctx" >/dev/null
echo "image: warpdrive:$version ($(podman image inspect "warpdrive:$version" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
