# The same targets for people and CI. Builds use two jobs (see .cargo/config.toml).
CARGO ?= cargo

.PHONY: help deps build release test lint fmt demo bench package package-check image image-check clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install emulators and FUSE tools (apt, npm, pip; idempotent)
	@scripts/install-deps.sh

build: ## debug build of all binaries
	$(CARGO) build --bins

release: ## optimised build of all binaries
	$(CARGO) build --release --bins

test: deps ## unit and integration tests (real FUSE mounts over real emulators; needs root), then a secret scan of their logs
	$(CARGO) build --bins
	rm -rf target/test-output
	$(CARGO) test --workspace
	scripts/scan-secrets.sh target/test-output

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

demo: deps release ## the showcase on local emulators: cold, warm and restarted training through the mount (DEMO_SCALE=quick|seed)
	demo/run.sh

bench: deps release ## benchmarks: the mount vs the store API, the cache vs the disk, forge warm vs local and cold vs the WAN, small files vs direct GETs, local disk and rclone, the fleet tier across nodes, epoch plans on a dataset twice the cache, checkpoint writes vs direct uploads
	$(CARGO) bench -p warpdrive-mount --bench mount
	$(CARGO) bench -p warpdrive-mount --bench cache
	$(CARGO) bench -p warpdrive-mount --bench showcase
	$(CARGO) bench -p warpdrive-mount --bench small_files
	$(CARGO) bench -p warpdrive-mount --bench fleet
	$(CARGO) bench -p warpdrive-mount --bench plan
	$(CARGO) bench -p warpdrive-mount --bench write

package: release ## the Debian package target/debian/warpdrive_*.deb: binaries, systemd unit, example config, man pages, completions, docs
	scripts/package.sh

package-check: package ## install the package on a fresh Debian root and check it there (config check, man pages, unit, a mount to ready)
	scripts/package-check.sh

image: package ## the container image warpdrive:VERSION (deploy/container/Containerfile) with podman; BASE=IMAGE for another base
	scripts/image.sh

image-check: package ## build the image on a fresh Debian base and run the daemon in it against an S3 emulator
	scripts/image-check.sh

clean:
	$(CARGO) clean
