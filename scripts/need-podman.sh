# Sourced by scripts/image.sh and scripts/image-check.sh: installs podman and runc if
# missing. runc, not podman's default crun: crun refuses a machine whose cgroups are mounted
# in hybrid mode (v1 controllers with a v2 hierarchy), as this one's are.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    echo "$(basename "$0"): apt-get install podman runc"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
fi
