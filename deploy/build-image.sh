#!/usr/bin/env bash
# Build the container image from wheels built on the host (make image calls this after `pip wheel`).
# Docker when there is one; else Podman, with what these machines need: a local base image made with
# debootstrap when none can be pulled, chroot isolation, and a containers.conf without default ulimits.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:?usage: deploy/build-image.sh IMAGE}"
base="docker.io/library/debian:bookworm-slim"
[ -n "$(ls build/wheels/mqtt_vision_bridge-*.whl 2>/dev/null)" ] || { echo "no wheels in build/wheels: run make image" >&2; exit 2; }

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null 2>&1; then engine=podman
    else echo "neither a running docker nor podman found (apt-get install -y podman runc debootstrap)" >&2; exit 3
    fi
fi

if [ "$engine" = docker ]; then
    exec docker build -f deploy/Dockerfile -t "$image" .
fi

export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/build/containers.conf}"
if [ ! -f "$CONTAINERS_CONF" ]; then
    mkdir -p "$(dirname "$CONTAINERS_CONF")"
    printf '[containers]\ndefault_ulimits = []\n' > "$CONTAINERS_CONF"
fi
if ! podman image exists "$base"; then
    if ! podman pull -q "$base" >/dev/null 2>&1; then
        command -v debootstrap >/dev/null 2>&1 || { echo "cannot pull $base and debootstrap is missing" >&2; exit 3; }
        rootfs="$(mktemp -d)"
        echo "making $base locally with debootstrap (about 30 s)" >&2
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
        tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
        rm -rf "$rootfs"
    fi
fi
exec podman build --pull=never --isolation=chroot --format docker -f deploy/Dockerfile -t "$image" .
