#!/usr/bin/env bash
# Build a Debian base image without an image registry: debootstrap a minimal
# Debian from its package mirror and `docker import` it. The Dockerfiles take
# it as their base (`--build-arg BASE=p2pmr-base:bookworm`, which
# docker-compose.local.yml passes), for machines that reach a Debian mirror and
# PyPI but no image registry.
#
#   scripts/docker-base.sh [--force]
#
# Skipped when the image exists, unless --force. Needs root (or sudo),
# debootstrap and a Docker daemon. Environment: P2PMR_BASE_IMAGE (the tag,
# default p2pmr-base:bookworm), DEBIAN_MIRROR (default
# http://deb.debian.org/debian), DEBIAN_SUITE (default bookworm).
set -euo pipefail

image="${P2PMR_BASE_IMAGE:-p2pmr-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${DEBIAN_SUITE:-bookworm}"
force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

if [ "$force" -eq 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image exists (--force rebuilds it)" >&2
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || {
    echo "$0: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
}

root="$(mktemp -d "${TMPDIR:-/tmp}/p2pmr-base.XXXXXX")"
# debootstrap mounts /proc, /sys and (in a container) /dev into the tree while
# it works: an interrupted run leaves them mounted, and rm must not follow them.
cleanup() {
    local mount
    for mount in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
        $sudo umount -l "$mount" || true
    done
    $sudo rm -rf --one-file-system "$root"
}
trap cleanup EXIT
echo "debootstrapping $suite from $mirror into $image" >&2
# minbase: essential packages and apt only. python3-venv brings python3 and
# ensurepip; ca-certificates is for pip's and npm's HTTPS.
$sudo debootstrap --variant=minbase --include=python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >&2
# Nothing the image needs: downloaded packages, package lists (every
# Dockerfile runs apt-get update first), documentation, locales but C.
$sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/*.log "$root"/var/cache/debconf/*-old
$sudo find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C*' \
    -exec rm -rf {} +
# apt in a container: no daemons to start, no recommended packages.
printf '#!/bin/sh\nexit 101\n' | $sudo tee "$root/usr/sbin/policy-rc.d" >/dev/null
$sudo chmod 755 "$root/usr/sbin/policy-rc.d"
echo 'APT::Install-Recommends "false";' | \
    $sudo tee "$root/etc/apt/apt.conf.d/99-no-recommends" >/dev/null
$sudo tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$image" >/dev/null
echo "built $image ($(docker image inspect -f '{{.Size}}' "$image" | \
    awk '{printf "%.0f MB", $1 / 1e6}'))" >&2
