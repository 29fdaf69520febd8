#!/usr/bin/env bash
# The WarpDrive showcase, as in the seed (../shared/SEED.md), on local emulators: two Azure
# "regions" (two Azurite instances, each behind a WAN simulator) mounted as one tree, and a
# training workload (warpdrive-forge) run cold, warm, and warm again after a restart, then on a
# second node that reads through the fleet's shared tier, with the metrics of each run,
# governance commands while mounted, a capability checklist decided from what was measured,
# demo/out/results.json and demo/out/report.html.
#
#   DEMO_SCALE=quick   quick (default: 40 shards of 256 images, ~450 MB, minutes on 2 cores),
#                      seed (the seed's scale: 200 shards of 592 images, ~20 GB), tiny (CI)
#   WD_MOUNT=/wd       where to mount (must be empty or absent)
#   DEMO_OUT=demo/out  where results.json and report.html go
#   DEMO_DATA=demo/data  where generated datasets are kept and reused
#   DEMO_STATE=/tmp/warpdrive-demo  the run's config, logs, cache and measurements
#   DEMO_WAN=on        off: no WAN simulator (the mount talks to the emulators directly)
#   DEMO_KEEP=1        leave the mount and emulators running at the end
#   WD_BIN=target/release  where the binaries are
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${WD_BIN:-target/release}
MNT=${WD_MOUNT:-/wd}
MNT2=$MNT-node2
SCALE=${DEMO_SCALE:-quick}
OUT=${DEMO_OUT:-demo/out}
DATA=${DEMO_DATA:-demo/data}/$SCALE
STATE=${DEMO_STATE:-/tmp/warpdrive-demo}
CACHE=$STATE/cache
CACHE2=$STATE/cache-node2

# Per scale: the dataset (forge gen flags and its size in MB), and the training parameters.
case $SCALE in
tiny)
    GEN=(--shards 8 --samples-per-shard 48 --image-size 96x72) SIZE_MB=3
    TRAIN=(--steps 24 --batch-size 16 --num-workers 4 --seed 42 --log-every 6) ;;
quick)
    GEN=(--shards 40 --samples-per-shard 256 --image-size 320x240) SIZE_MB=460
    TRAIN=(--steps 300 --batch-size 32 --num-workers 8 --seed 42 --log-every 50) ;;
seed)
    GEN=(--preset coco) SIZE_MB=20500
    TRAIN=(--steps 300 --batch-size 32 --num-workers 8 --seed 42 --log-every 50) ;;
*) echo "DEMO_SCALE must be tiny, quick or seed, not '$SCALE'" >&2; exit 2 ;;
esac

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
CTL=("$BIN/warpdrive-ctl" --config "$STATE/config.yaml")
REPORT=("$BIN/warpdrive-report" --state "$STATE" --mount-point "$MNT" --scale "$SCALE")

unmount() { # [MOUNT CONFIG]: node 1's by default
    local mnt=${1:-$MNT} config=${2:-$STATE/config.yaml}
    if grep -qs " $mnt fuse" /proc/mounts; then umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
    # The daemon exits once its mount is gone; wait for it so the next one gets the cache lock.
    for _ in $(seq 100); do pgrep -f "warpdrive-mount --config $config" >/dev/null || return 0; sleep 0.1; done
    pkill -f "warpdrive-mount --config $config" || true
}

stop_all() {
    unmount
    unmount "$MNT2" "$STATE/node2.yaml"
    if [ -f "$STATE/testkit.pid" ]; then
        kill "$(cat "$STATE/testkit.pid")" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$(cat "$STATE/testkit.pid")" 2>/dev/null || break; sleep 0.1; done
        rm -f "$STATE/testkit.pid"
    fi
}

cleanup() {
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "left running: mount $MNT, emulators (pid $(cat "$STATE/testkit.pid" 2>/dev/null)); config $STATE/config.yaml"
        return
    fi
    stop_all
}
trap cleanup EXIT

mount_wd() { # [MOUNT CONFIG LOG]: node 1's by default
    local mnt=${1:-$MNT} config=${2:-$STATE/config.yaml} log=${3:-$STATE/warpdrive.log}
    "$BIN/warpdrive-mount" --config "$config" --daemon --log-file "$log" || true
    for _ in $(seq 60); do
        grep -qs " $mnt fuse" /proc/mounts && return 0
        sleep 0.5
    done
    echo "the mount did not come up within 30 s; the last 20 lines of its log:" >&2
    tail -20 "$log" >&2 || true
    exit 1
}

drop_page_cache() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || echo "(could not drop the page cache: not root)"
}

run_phase() { # NAME [MOUNT CONFIG]: one training run, measured (on node 1 by default)
    local name=$1 mnt=${2:-$MNT} config=${3:-$STATE/config.yaml}
    local ctl=("$BIN/warpdrive-ctl" --config "$config")
    drop_page_cache
    "${ctl[@]}" metrics --snapshot "$STATE/$name.before.json" >/dev/null
    "$BIN/warpdrive-forge" train --train-root-a "$mnt/datasets-cac/train" --train-root-b "$mnt/datasets-wus3/train" \
        "${TRAIN[@]}" --summary "$STATE/$name.summary.json" 2>"$STATE/$name.forge.err" | tee "$STATE/$name.forge.log"
    sed 's/^/  /' "$STATE/$name.forge.err"
    # Prefetches the run started may still be landing: they belong to this run, not the next.
    for _ in $(seq 600); do
        "${ctl[@]}" metrics --json | grep -q '"in_flight_bytes":0.0' && break
        sleep 0.1
    done
    "${ctl[@]}" metrics --since "$STATE/$name.before.json" --json >"$STATE/$name.metrics.json"
    "${REPORT[@]}" phase "$name"
}

bold "Preparing: dataset, emulators, WAN simulator"
# A previous run's mount, processes and state go first.
mkdir -p "$STATE"
stop_all
rm -rf "$STATE"/*.json "$STATE"/*.log "$STATE"/*.err "$STATE/governance.txt"
mkdir -p "$MNT" "$MNT2" "$OUT" "$DATA"
avail_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
# The emulators keep a copy of the dataset and the cache another, both under $STATE's disk,
# and the cache leaves 1 GiB free (cache.min_free in the generated config).
# A previous run's cache is deleted in phase 1, so its space counts as free.
old_cache_mb=$(du -sm "$CACHE" 2>/dev/null | cut -f1 || true)
free_mb=$(($(avail_mb "$STATE") + ${old_cache_mb:-0}))
if [ "$free_mb" -lt $((2 * SIZE_MB + 1500)) ]; then
    echo "the $SCALE scale needs about $((2 * SIZE_MB + 1500)) MB free under $STATE (emulators' copy, the cache and 1 GiB it leaves free); $free_mb MB are. Set DEMO_STATE to a bigger disk." >&2
    exit 1
fi
want="${GEN[*]}"
if [ "$(cat "$DATA/spec.txt" 2>/dev/null)" != "$want" ]; then
    if [ "$(avail_mb "$DATA")" -lt $((SIZE_MB + 200)) ]; then
        echo "the $SCALE dataset needs about $SIZE_MB MB under $DATA; $(avail_mb "$DATA") MB are free. Set DEMO_DATA to a bigger disk." >&2
        exit 1
    fi
    echo "generating the $SCALE dataset in $DATA (once; later runs reuse it)"
    rm -f "$DATA"/shard-*.tar
    "$BIN/warpdrive-forge" gen --out "$DATA" "${GEN[@]}"
    echo "$want" >"$DATA/spec.txt"
else
    echo "reusing the $SCALE dataset in $DATA ($(ls "$DATA"/shard-*.tar | wc -l) shards, $(du -sh "$DATA" | cut -f1))"
fi
WAN_ARGS=()
[ "${DEMO_WAN:-on}" = off ] && WAN_ARGS=(--no-wan)
"$BIN/warpdrive-testkit" demo --shards-dir "$DATA" --config-out "$STATE/config.yaml" --info-out "$STATE/info.json" \
    --mount-point "$MNT" --cache-dir "$CACHE" "${WAN_ARGS[@]}" \
    --node2-config-out "$STATE/node2.yaml" --node2-mount-point "$MNT2" --node2-cache-dir "$CACHE2" \
    >"$STATE/testkit.out" 2>"$STATE/testkit.log" &
echo $! >"$STATE/testkit.pid"
for _ in $(seq 1200); do
    grep -q '^ready' "$STATE/testkit.out" 2>/dev/null && break
    kill -0 "$(cat "$STATE/testkit.pid")" 2>/dev/null || break
    sleep 0.5
done
grep -q '^ready' "$STATE/testkit.out" || { echo "the emulators did not start:"; tail -20 "$STATE/testkit.log"; exit 1; }
grep -E 'WAN|direct|shared tier' "$STATE/testkit.log" | sed 's/^/  /'

bold "Phase 1: cross-region data fabric"
echo "deleting the cache directories: the first run starts truly cold (and the shared tier is new)"
rm -rf "$CACHE" "$CACHE2"
mount_wd
echo "$MNT/"
for b in "$MNT"/*/; do
    echo " ├── $(basename "$b")/"
    for d in "$b"*/; do
        n=$(ls "$d" | wc -l)
        echo " │   └── $(basename "$d")/  ($n objects: $(ls "$d" | head -3 | tr '\n' ' ')…)"
    done
done
cat <<EOF
Key points:
  - Two storage accounts in two regions (and an S3 bucket) appear as directories under one mount.
  - The training code reads plain POSIX paths such as $MNT/datasets-cac/train/shard-000000.tar:
    no cloud SDK, no Azure-specific code.
  - Authentication by managed identity (tokens from the instance-metadata endpoint); the config
    holds no key and no secret:
EOF
sed 's/^/      /' "$STATE/config.yaml" | grep -E 'auth|name:'

bold "Phase 2: cold-cache training (every byte crosses the WAN)"
run_phase cold

bold "Phase 3: warm-cache training (same shards, same order)"
run_phase warm

bold "Phase 4: results"
"${REPORT[@]}" compare
bold "Metrics dashboard (warpdrive-ctl metrics, since the daemon started)"
"${CTL[@]}" metrics --json >"$STATE/dashboard.json"
"${CTL[@]}" metrics
bold "Data governance, while mounted"
sleep 2.5 # the daemon commits its hit and miss counts to the index every 2 s
for cmd in stats usage stale; do
    echo "\$ warpdrive-ctl $cmd"
    rc=0
    "${CTL[@]}" "$cmd" || rc=$?
    echo "$cmd $rc" >>"$STATE/governance.txt"
    echo
done
cat <<'EOF'
Also available (see warpdrive-ctl --help):
  warm PATH     pre-populate the cache before a job (warpdrive-ctl warm /wd/datasets-cac/train)
  quota         per-team cache quotas
  copy / move   copy or move data between backends, verified, resumable
  evict, verify drop cached data; check every cached block against its checksum
  status        mount, cache and backend health, auth, quotas
  serve         the control API over TCP, behind a token
  metrics       this dashboard, live with --watch
EOF

bold "Phase 5: beyond the seed: restart"
echo "unmounting, mounting again: the cache on disk is reused"
unmount
mount_wd
run_phase restart

bold "Phase 6: beyond the seed: a fleet (a second node reads through the shared tier)"
cat <<EOF
A second node, with its own daemon, cache directory and mount point ($MNT2) and an empty
cache, trains on the same shards. Node 1's cold run wrote every chunk it fetched to the shared
tier (a container in the cluster's region, behind a link faster than the cross-region ones),
so node 2 should fetch nothing across the WAN.
EOF
mount_wd "$MNT2" "$STATE/node2.yaml" "$STATE/warpdrive-node2.log"
run_phase fleet "$MNT2" "$STATE/node2.yaml"
"$BIN/warpdrive-ctl" --config "$STATE/node2.yaml" fleet status | sed 's/^/  /'
unmount "$MNT2" "$STATE/node2.yaml"

bold "Summary"
"${REPORT[@]}" final --out "$OUT"
