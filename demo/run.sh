#!/usr/bin/env bash
# The showcase, until the training workload exists: two Azure "regions" (two Azurite
# instances) and one S3 bucket (moto), all on loopback, mounted as one tree by WarpDrive.
#   WD_MOUNT=/wd      where to mount (must be empty or absent)
#   DEMO_KEEP=1       leave the mount and emulators running at the end
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
MNT=${WD_MOUNT:-/wd}
STATE=$(mktemp -d /tmp/warpdrive-demo.XXXXXX)
CACHE=$STATE/cache

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }

cleanup() {
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "left running: mount $MNT, emulators (pid $(cat "$STATE/testkit.pid" 2>/dev/null)); config $STATE/config.yaml"
        return
    fi
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" 2>/dev/null || umount -l "$MNT"; fi
    [ -f "$STATE/testkit.pid" ] && kill "$(cat "$STATE/testkit.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$STATE"
}
trap cleanup EXIT

bold "Phase 0: starting local emulators and uploading sample shards"
if grep -qs " $MNT fuse" /proc/mounts; then
    echo "clearing a previous mount at $MNT"; umount "$MNT" 2>/dev/null || umount -l "$MNT" || true
fi
mkdir -p "$MNT"
"$BIN/warpdrive-testkit" demo --config-out "$STATE/config.yaml" --mount-point "$MNT" --cache-dir "$CACHE" \
    >"$STATE/testkit.out" 2>"$STATE/testkit.log" &
echo $! >"$STATE/testkit.pid"
for _ in $(seq 120); do grep -q '^ready' "$STATE/testkit.out" 2>/dev/null && break; sleep 0.5; done
grep -q '^ready' "$STATE/testkit.out" || { echo "emulators did not start:"; cat "$STATE/testkit.log"; exit 1; }
echo "config (no secrets: every backend authenticates with managed identity, tokens from the instance-metadata emulator):"
sed 's/^/    /' "$STATE/config.yaml"

bold "Phase 1: one namespace over two regions and two clouds"
"$BIN/warpdrive-mount" --config "$STATE/config.yaml" --daemon --log-file "$STATE/warpdrive.log"
echo "$MNT/"
for b in "$MNT"/*/; do
    echo " ├── $(basename "$b")/"
    for d in "$b"*/; do
        n=$(ls "$d" | wc -l)
        echo " │   └── $(basename "$d")/  ($n objects: $(ls "$d" | head -3 | tr '\n' ' ')…)"
    done
done

bold "Plain POSIX reads: no cloud SDK in the reader"
f="$MNT/datasets-cac/train/shard-000000.tar"
start=$(date +%s%N)
sum=$(sha256sum "$f" | cut -c1-16)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "sha256sum $f -> $sum… ($(stat -c %s "$f") bytes in ${ms} ms)"
wc -c "$MNT"/datasets-wus3/train/*.tar | tail -1 | sed 's/total/bytes across all West US 3 shards/'

CTL=("$BIN/warpdrive-ctl" --config "$STATE/config.yaml")
readall() {
    local start bytes
    start=$(date +%s%N)
    bytes=$(cat "$MNT"/*/train/*.tar | wc -c)
    echo "$bytes bytes in $(( ($(date +%s%N) - start) / 1000000 )) ms"
}

bold "Phase 2: cold read of every shard (fetched from the emulators into the block cache)"
"${CTL[@]}" metrics --snapshot "$STATE/cold.json" >/dev/null
readall
"${CTL[@]}" metrics --since "$STATE/cold.json" | sed -n '/^Cache/,/^  objects/p;/^Backend I\/O/,/^$/p'

bold "Phase 3: warm read after dropping the kernel's page cache (served from the block cache)"
sync; echo 3 >/proc/sys/vm/drop_caches
"${CTL[@]}" metrics --snapshot "$STATE/warm.json" >/dev/null
readall
"${CTL[@]}" metrics --since "$STATE/warm.json" | sed -n '/^Cache/,/^  objects/p;/^Backend I\/O/,/^$/p'

bold "warpdrive-ctl stats (the cache's lifetime totals, read while the mount is live)"
sleep 2.5 # the daemon commits its hit and miss counts to the index every 2 s
"${CTL[@]}" stats

bold "warpdrive-ctl usage --by path"
"${CTL[@]}" usage --by path

bold "warpdrive-ctl status"
"${CTL[@]}" status || true

bold "Done"
echo "Metrics: $(grep -o 'listen: [0-9.:]*' "$STATE/config.yaml" | head -1) (try: warpdrive-ctl --config $STATE/config.yaml metrics --watch, with DEMO_KEEP=1)."
echo "The training workload and its four-phase cold/warm story are next (see issues)."
