#!/usr/bin/env bash
# Makes the Debian bookworm base image the container tests build on, from Debian itself
# (this machine reaches no container registry): debootstrap --variant=minbase, then
# `podman import`. It stands in for debian:bookworm-slim; the packages the runtime stage
# needs are included here so its build needs no network. Cached: the tarball in
# $CONTAINERS_STATE and the image in podman's storage are reused while they exist.
#   usage: base-image.sh            prints the image name
set -euo pipefail
source "$(dirname "$0")/env.sh"
IMAGE=localhost/mcp-base:bookworm
# What the runtime stage of the Dockerfile installs (keep the two lists alike).
PACKAGES=ca-certificates,tini,curl,libssl3,openssl
TARBALL=$CONTAINERS_STATE/base-bookworm-$(echo "$PACKAGES" | md5sum | cut -c1-8).tar

if podman image exists "$IMAGE" && [ -s "$TARBALL" ]; then
  echo "$IMAGE"; exit 0
fi
if [ ! -s "$TARBALL" ]; then
  # The mirror apt is configured with on this machine.
  mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | awk '$2 ~ /\/debian\/?$/ {print $2; exit}' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  root=$CONTAINERS_STATE/base-root.tmp
  rm -rf "$root"
  echo "base-image: debootstrap bookworm from $mirror (about a minute)" >&2
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$mirror" >"$CONTAINERS_STATE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CONTAINERS_STATE/debootstrap.log" >&2; exit 1; }
  # Like the slim image: no apt lists or caches, docs kept out.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$root"
fi
podman import -q --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE"
