#!/usr/bin/env bash
# Build the local base image for `make image`: debootstrap --variant=minbase of the host's Debian
# release + Debian's python3, trimmed, then `podman import`ed. No registry is reachable from CI, so
# this replaces python:3.11-slim there. The root filesystem tarball is cached (debootstrap takes
# minutes); the podman image is only re-imported when missing.
#   usage: build-base.sh IMAGE_NAME CACHE_DIR
set -euo pipefail
name=${1:?image name}
cache=${2:?cache dir}
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
if "${podman[@]}" image exists "$name"; then
  echo "base image $name exists"
  exit 0
fi
. /etc/os-release
suite=${VERSION_CODENAME:?cannot tell the Debian release from /etc/os-release}
tarball="$cache/base-$suite.tar"
if [ ! -s "$tarball" ]; then
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  root=$(mktemp -d "${TMPDIR:-/tmp}/corral-base.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap $suite (minbase + python3) from $mirror into $root"
  debootstrap --variant=minbase --include=python3 "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -20 "$root.log"; exit 1; }
  rm -f "$root.log"
  # What an image never needs: package caches and lists, docs, man pages, translations, and
  # glibc's iconv modules (8 MB; Python has its own codecs).
  rm -rf "$root"/usr/lib/*-linux-gnu/gconv \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/* "$root"/tmp/*
  mkdir -p "$cache"
  tar -C "$root" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
"${podman[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$name" >/dev/null
echo "imported $tarball as $name"
