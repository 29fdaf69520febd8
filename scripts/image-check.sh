#!/usr/bin/env bash
# `make image-check` (CI runs it): builds the container image on a base made here (a fresh
# mmdebstrap root of this machine's release, imported into podman: no registry needed) and
# runs the daemon in it as the DaemonSet does (privileged, /dev/fuse, the config mounted at
# /etc/warpdrive) against an S3 emulator (moto) on loopback: `warpdrive-ctl status --wait`
# inside the container, a file read through its mount, a clean stop on SIGTERM. Prints the
# image's size and the container's start-to-serving time.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "image-check: FAILED: $*" >&2; exit 1; }
. /etc/os-release
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
command -v mmdebstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
command -v moto_server >/dev/null || fail "moto_server is missing (make deps installs it)"
# podman makes the base below, before scripts/image.sh builds on it.
. scripts/need-podman.sh

work=$(mktemp -d /tmp/wd-image-check.XXXXXX)
moto=""
name="wd-image-check-$$"
cleanup() {
    podman rm -f "$name" >/dev/null 2>&1 || true
    [ -n "$moto" ] && kill "$moto" 2>/dev/null || true
    podman image prune -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

base="localhost/warpdrive-base:$VERSION_CODENAME"
mmdebstrap --quiet --variant=apt "$VERSION_CODENAME" - "$sources" 2>"$work/mmdebstrap.log" \
    | podman import --quiet - "$base" >/dev/null || fail "making the base: $(cat "$work/mmdebstrap.log")"
BASE="$base" scripts/image.sh
version=$(ls -t target/debian/warpdrive_*.deb | head -n 1 | xargs basename | cut -d_ -f2 | cut -d- -f1)
image="warpdrive:$version"

# moto on a free loopback port, with one bucket and one object.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs -X PUT "http://127.0.0.1:$port/data" >/dev/null || fail "creating the bucket: $(cat "$work/moto.log")"
echo "served from the container" >"$work/hello.txt"
curl -fs -T "$work/hello.txt" "http://127.0.0.1:$port/data/hello.txt" >/dev/null \
    || fail "putting the object"

mkdir -p "$work/etc"
cat >"$work/etc/config.yaml" <<YAML
mount_point: /wd
cache: { dir: /var/cache/warpdrive, max_size: 1GiB }
metrics: { enabled: false }
backends:
  - name: data
    s3: { bucket: data, endpoint: "http://127.0.0.1:$port" }
    auth: emulator
YAML
t0=$(date +%s.%N)
# Limits no higher than this shell's: podman's defaults would raise them, which needs
# CAP_SYS_RESOURCE (some sandboxes, this one among them, withhold it).
podman --runtime runc run -d --name "$name" --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" \
    --ulimit nproc=4096:4096 --privileged --network=host --device /dev/fuse \
    -v "$work/etc:/etc/warpdrive:ro" "$image" >/dev/null || fail "podman run"
podman exec "$name" warpdrive-ctl status --wait 30 >"$work/status.txt" 2>&1 \
    || fail "the mount did not serve: $(cat "$work/status.txt"; podman logs "$name" 2>&1 | tail -n 20)"
t1=$(date +%s.%N)
got=$(podman exec "$name" cat /wd/data/hello.txt) || fail "reading through the mount: $(podman logs "$name" 2>&1 | tail -n 20)"
[ "$got" = "served from the container" ] || fail "read $got"
podman stop -t 20 "$name" >/dev/null
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM: $(podman logs "$name" 2>&1 | tail -n 20)"
podman logs "$name" 2>&1 | grep -q "SIGTERM: unmounting" || fail "no clean stop in the log"

size=$(podman image inspect "$image" --format '{{.Size}}')
echo "image-check: ok: $image $((size / 1000000)) MB; container start to serving" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s; read through its mount; stopped cleanly"
