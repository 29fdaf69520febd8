#!/usr/bin/env bash
# `make package`: the Debian package, target/debian/warpdrive_VERSION_ARCH.deb.
#   1. the release binaries (built by `make release` before this runs);
#   2. their man pages and shell completions, generated from the binaries' own clap
#      definitions (WARPDRIVE_GENERATE_DOCS, crates/warpdrive-cli) into target/docs;
#   3. cargo-deb packs them with the systemd unit, the example config and the docs
#      (crates/warpdrive-mount/Cargo.toml, [package.metadata.deb]); installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    echo "package: cargo install cargo-deb"
    cargo install --locked cargo-deb
fi

rm -rf target/docs
for bin in warpdrive-mount warpdrive-ctl warpdrive-forge; do
    WARPDRIVE_GENERATE_DOCS=target/docs "target/release/$bin"
done

# Stripped: the line tables of the release profile are for backtraces in development.
deb=$(cargo deb -p warpdrive-mount --no-build --strip 2>&1 | tail -n 1)
[ -f "$deb" ] || { echo "package: cargo deb did not make a package: $deb" >&2; exit 1; }
echo "package: $deb ($(du -h "$deb" | cut -f1))"
