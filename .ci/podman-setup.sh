#!/usr/bin/env bash
# Makes podman usable on a Debian machine with no Docker engine and no Docker Hub, as
# shared/CONTAINERS.md describes: installs podman, runc and debootstrap, points podman at
# runc and cgroupfs, and imports a debootstrapped Debian base image once (then cached).
# Run as root. Idempotent: each step is skipped when its result is already there.
# Usage: .ci/podman-setup.sh [BASE_IMAGE]   (default localhost/debian-python:bookworm)
set -euo pipefail

BASE_IMAGE=${1:-${BASE_IMAGE:-localhost/debian-python:bookworm}}
SUITE=bookworm

say() { printf 'podman-setup: %s\n' "$*"; }
die() { printf 'podman-setup: FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get, /etc/containers, podman as root)"

# 1. Packages. curl and jq are used by .ci/container-test.sh to talk to the service.
missing=()
for pkg in podman runc debootstrap curl jq; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null ||
        die "apt-get update failed: the Debian package registry is unreachable, so the container tooling (${missing[*]}) cannot be installed"
    apt-get install -y -q "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi
for cmd in podman runc debootstrap curl jq; do
    command -v "$cmd" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null ||
        die "$cmd is not on PATH after installing it"
done
export PATH="$PATH:/usr/sbin:/sbin"

# 2. Runtime settings: crun and the systemd cgroup manager fail here, and runc needs
#    explicit ulimits below the machine's hard limit of 20000 open files.
conf=/etc/containers/containers.conf
want='[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"'
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    if [ -f "$conf" ]; then
        cp -p "$conf" "$conf.bak.$(date +%Y%m%d%H%M%S)"
        say "replacing $conf (old copy kept beside it)"
    else
        say "writing $conf"
    fi
    mkdir -p /etc/containers
    printf '%s\n' "$want" >"$conf"
fi

# 3. Base image: none can be pulled, so build a minimal Debian with Python 3 and import it.
if podman image exists "$BASE_IMAGE"; then
    say "base image $BASE_IMAGE is cached"
else
    rootfs=$(mktemp -d /var/tmp/debian-rootfs.XXXXXX)
    trap 'rm -rf -- "$rootfs"' EXIT
    say "debootstrapping $SUITE into $rootfs (about 75 s)"
    start=$SECONDS
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$rootfs" >"$rootfs.log" 2>&1 || {
        tail -n 20 "$rootfs.log" >&2
        rm -f -- "$rootfs.log"
        die "debootstrap $SUITE failed"
    }
    rm -f -- "$rootfs.log"
    # Drop apt's downloaded .debs and lists: they are not needed in a base image.
    rm -rf -- "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . |
        podman import --quiet \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/sh"]' \
            - "$BASE_IMAGE" >/dev/null || die "podman import of the base image failed"
    say "imported $BASE_IMAGE in $((SECONDS - start)) s"
fi
