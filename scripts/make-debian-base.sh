#!/usr/bin/env bash
# Build a minimal Debian bookworm + Python 3.11 base image locally, for CI machines without a registry.
# It stands in for python:3.11-slim-bookworm (the pinned base of every image): same Debian release,
# same Python minor version. Cached by tag: nothing is done when the tag already exists.
#
#   scripts/make-debian-base.sh [TAG]        (default mergebench-local/debian-python:bookworm-3.11)
#
# Needs root, debootstrap and a Docker engine. The host's CA bundle is copied in so that pip inside
# builds trusts the same package mirrors/proxies as the host does.
set -euo pipefail

TAG="${1:-${MB_LOCAL_BASE:-mergebench-local/debian-python:bookworm-3.11}}"
SUITE="${MB_DEBIAN_SUITE:-bookworm}"
MIRROR="${MB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${MB_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists, nothing to do"
    exit 0
fi

command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
work="$(mktemp -d /var/tmp/mergebench-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "debootstrap $SUITE from $MIRROR into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

mkdir -p "$rootfs/etc/ssl/certs"
cp "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*

tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    --message "mergebench local base: debootstrap $SUITE minbase + python3 ($(date -u +%F))" \
    - "$TAG"
echo "built base image $TAG"
