#!/usr/bin/env bash
# Build the container image from wheels built on the host (make image calls this after `pip wheel`), then print its
# size. Docker when there is one; else Podman, with what these machines need: chroot isolation, a containers.conf
# without default ulimits, and a slim Debian base made locally with debootstrap when none can be pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:?usage: deploy/build-image.sh IMAGE}"
base="docker.io/library/debian:bookworm-slim"
# the base made here when $base cannot be pulled: Debian's minbase, slimmed as the official -slim images are
local_base="localhost/mqtt-vision-bridge-base:bookworm-slim"
[ -n "$(ls build/wheels/mqtt_vision_bridge-*.whl 2>/dev/null)" ] || { echo "no wheels in build/wheels: run make image" >&2; exit 2; }

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker
    elif command -v podman >/dev/null 2>&1; then engine=podman
    else echo "neither a running docker nor podman found (apt-get install -y podman runc debootstrap)" >&2; exit 3
    fi
fi

print_size() {
    local bytes
    bytes="$("$engine" image inspect --format '{{.Size}}' "$image")"
    echo "image $image: $((bytes / 1000000)) MB ($bytes bytes, uncompressed)"
}

if [ "$engine" = docker ]; then
    docker build -f deploy/Dockerfile -t "$image" .
    print_size
    exit 0
fi

# Make a slim root file system with debootstrap (its default mirror, deb.debian.org, or the one of the host's
# debootstrap configuration) and import it. "Slim" as debuerreotype makes the official image: no documentation,
# manual pages or translations (dpkg path excludes, so the packages the Dockerfile installs stay slim too), no APT
# caches or package lists. Without this the debootstrap cache alone (the .deb files) adds ~115 MB.
make_local_base() {
    command -v debootstrap >/dev/null 2>&1 || { echo "cannot pull $base and debootstrap is missing" >&2; exit 3; }
    local rootfs
    rootfs="$(mktemp -d)"
    echo "cannot pull $base: making $local_base with debootstrap (about a minute)" >&2
    debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    # the official image's sources: the release, its updates and the security archive, on the mirror debootstrap
    # used (Debian's layout puts the security archive beside it as <mirror>-security); minbase writes the first only
    local mirror
    mirror="$(awk '$1 == "deb" {print $2; exit}' "$rootfs/etc/apt/sources.list")"
    mirror="${mirror%/}"
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
        "$mirror" "$mirror" "$mirror" > "$rootfs/etc/apt/sources.list"
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d" "$rootfs/etc/apt/apt.conf.d"
    cat > "$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    cat > "$rootfs/etc/apt/apt.conf.d/slim" <<'EOF'
Acquire::Languages "none";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
APT::Install-Recommends "false";
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    tar -C "$rootfs" -c . | podman import - "$local_base" >/dev/null
    rm -rf "$rootfs"
}

export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/build/containers.conf}"
if [ ! -f "$CONTAINERS_CONF" ]; then
    mkdir -p "$(dirname "$CONTAINERS_CONF")"
    printf '[containers]\ndefault_ulimits = []\n' > "$CONTAINERS_CONF"
fi
# a registry that cannot be reached fails at once here (no DNS); one that drops packets would make podman retry
if ! podman image exists "$base" && ! timeout 120 podman pull -q "$base" >/dev/null 2>&1; then
    podman image exists "$local_base" || make_local_base
    base="$local_base"
fi
podman build --pull=never --isolation=chroot --format docker --build-arg "BASE_IMAGE=$base" \
    -f deploy/Dockerfile -t "$image" .
print_size
