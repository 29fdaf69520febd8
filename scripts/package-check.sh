#!/usr/bin/env bash
# `make package-check` (CI runs it): installs the package `make package` built on a fresh
# Debian root of this machine's release (mmdebstrap, from this machine's apt sources) and
# checks it there:
#   - apt installs it with its dependencies (fuse3, ca-certificates) from the Debian archive;
#   - `warpdrive-mount --check-config` accepts the example /etc/warpdrive/config.yaml, and
#     without CA certificates says so instead of failing in the client library;
#   - the binaries, man pages (rendered), completions and the systemd unit are where they
#     belong, and `systemd-analyze verify` accepts the installed unit;
#   - the installed daemon serves a mount in the fresh root (a local-directory backend) and
#     writes its --ready-file, then stops cleanly on SIGTERM.
# Prints the figures: package size, install time, start-to-ready and install-to-ready.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/debian/warpdrive_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "package-check: no package in target/debian; run make package" >&2; exit 1; }
if ! command -v mmdebstrap >/dev/null; then
    echo "package-check: apt-get install mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
. /etc/os-release
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list

root=$(mktemp -d /tmp/wd-debroot.XXXXXX)
daemon=""
cleanup() {
    [ -n "$daemon" ] && kill -KILL "$daemon" 2>/dev/null || true
    umount -l "$root/mnt/wd" 2>/dev/null || true
    for m in run sys dev proc; do umount -R "$root/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$root" "$root.log"
}
trap cleanup EXIT
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }

echo "package-check: a fresh $VERSION_CODENAME root in $root"
# A machine as one is installed: apt, systemd and man, nothing else.
mmdebstrap --quiet --variant=apt --include=systemd,man-db --skip=cleanup/apt/lists \
    "$VERSION_CODENAME" "$root" "$sources" 2>"$root.log" || fail "mmdebstrap: $(cat "$root.log")"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs tmpfs "$root/run"
cp "$deb" "$root/tmp/warpdrive.deb"

t0=$(date +%s.%N)
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/warpdrive.deb \
    >"$root.log" 2>&1 || fail "apt-get install of the package: $(cat "$root.log")"
t1=$(date +%s.%N)

out=$(chroot "$root" warpdrive-mount --check-config 2>&1) || fail "--check-config on the example: $out"
grep -q "/etc/warpdrive/config.yaml is valid" <<<"$out" || fail "--check-config said: $out"
# Without CA certificates (an empty certificate directory): a clear error, not a panic.
mkdir -p "$root/tmp/no-certs"
out=$(chroot "$root" env SSL_CERT_FILE=/tmp/no-certs/none SSL_CERT_DIR=/tmp/no-certs \
    warpdrive-mount --check-config 2>&1) && fail "--check-config without CA certificates passed: $out"
grep -q "ca-certificates" <<<"$out" && ! grep -q "panicked" <<<"$out" \
    || fail "--check-config without CA certificates said: $out"
for bin in warpdrive-mount warpdrive-ctl warpdrive-forge; do
    chroot "$root" "$bin" --version >/dev/null || fail "$bin --version"
    page="$root/usr/share/man/man1/$bin.1.gz"
    [ -f "$page" ] || fail "no man page $page"
    chroot "$root" env MANWIDTH=80 man "$bin" 2>/dev/null | grep -q "$bin" || fail "man $bin does not render"
    [ -f "$root/usr/share/bash-completion/completions/$bin" ] || fail "no bash completion for $bin"
    [ -f "$root/usr/share/zsh/vendor-completions/_$bin" ] || fail "no zsh completion for $bin"
    [ -f "$root/usr/share/fish/vendor_completions.d/$bin.fish" ] || fail "no fish completion for $bin"
done
unit=/usr/lib/systemd/system/warpdrive.service
[ -f "$root$unit" ] || fail "no unit $unit"
# The root's own systemd checks the unit, its binaries and its man page.
verify=$(chroot "$root" systemd-analyze verify --man=yes "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
! grep -q "warpdrive" <<<"$verify" || fail "systemd-analyze verify warns: $verify"
[ -f "$root/usr/share/doc/warpdrive/CONFIGURATION.md" ] || fail "no docs"

# The installed daemon, in the fresh root, over a local directory.
mkdir -p "$root/srv/data" "$root/mnt/wd"
echo "served from the fresh root" >"$root/srv/data/hello.txt"
cat >"$root/tmp/local.yaml" <<'YAML'
mount_point: /mnt/wd
cache: { dir: /var/cache/warpdrive-check, max_size: 1GiB }
metrics: { enabled: false }
control: { socket: /run/warpdrive-check.sock }
backends:
  - name: data
    local: { path: /srv/data }
YAML
t2=$(date +%s.%N)
chroot "$root" warpdrive-mount --config /tmp/local.yaml --ready-file /run/warpdrive.ready \
    >"$root/tmp/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 1 300); do
    [ -s "$root/run/warpdrive.ready" ] && break
    kill -0 "$daemon" 2>/dev/null || fail "the daemon exited: $(cat "$root/tmp/daemon.log")"
    sleep 0.05
done
[ -s "$root/run/warpdrive.ready" ] || fail "no ready file after 15 s: $(cat "$root/tmp/daemon.log")"
t3=$(date +%s.%N)
got=$(cat "$root/mnt/wd/data/hello.txt") || fail "reading through the mount"
[ "$got" = "served from the fresh root" ] || fail "read $got"
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon's exit status after SIGTERM: $?"
daemon=""
[ ! -e "$root/run/warpdrive.ready" ] || fail "the ready file outlived the daemon"

size=$(stat -c %s "$deb")
echo "package-check: ok: $(basename "$deb") $((size / 1024)) KiB;" \
    "install (apt, with fuse3 and ca-certificates) $(secs "$t0" "$t1") s;" \
    "start to ready $(secs "$t2" "$t3") s;" \
    "install to ready $(awk -v i="$(secs "$t0" "$t1")" -v r="$(secs "$t2" "$t3")" 'BEGIN { printf "%.2f", i + r }') s"
