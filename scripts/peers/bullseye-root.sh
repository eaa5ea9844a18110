#!/usr/bin/env bash
# Makes a Debian 11 (bullseye, glibc 2.31) root with debootstrap for test/preload/oldglibc.test.ts,
# which runs the fixtures inside it (chroot) under the libheaptap.so built on this host: the
# proof that the library loads on a glibc older than the one it was built on. The root has
# its own gcc, g++ and make, so the fixtures are built there, by bullseye's toolchain against
# bullseye's glibc and libstdc++, as a program on such a system would be. Cached outside the
# repository, so a second run only prints the path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/roots/bullseye
# Usage: scripts/peers/bullseye-root.sh      make the root if needed, print its path
#        BULLSEYE_MIRROR=http://... scripts/peers/bullseye-root.sh
# Needs root (debootstrap, and the tests chroot into it); installs debootstrap with apt-get if
# missing. First run: 1.5 to 5 minutes (the mirror's speed) and 90 MB of downloads; the root
# takes about 400 MB.
set -euo pipefail

suite=bullseye
mirror="${BULLSEYE_MIRROR:-http://deb.debian.org/debian}"
# What the fixtures' Makefile uses (cc, c++, make, strip from binutils).
include=gcc,g++,make,libc6-dev,binutils
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
roots="$cache/roots"
dir="$roots/$suite"
stamp="$dir/.heaptap-root"

usable() { [ -f "$stamp" ] && [ -x "$dir/usr/bin/gcc" ] && [ -x "$dir/usr/bin/make" ]; }
if usable; then echo "$dir"; exit 0; fi

if [ "$(id -u)" != 0 ]; then
  echo "bullseye-root.sh: need root (debootstrap, chroot)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "bullseye-root.sh: installing Debian package debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mkdir -p "$roots"
# Test files run in parallel: one debootstrap at a time, the others wait for it.
exec 9>"$roots/.$suite.lock"
flock 9
if usable; then echo "$dir"; exit 0; fi

work="$(mktemp -d "$roots/.$suite.XXXXXX")"
# debootstrap mounts /proc and /sys inside the target while it installs: never delete
# through a mount point that a killed run left behind.
cleanup() {
  findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
echo "bullseye-root.sh: debootstrap $suite (minbase + $include) from $mirror into $dir (first run: a few minutes)" >&2
start=$SECONDS
if ! debootstrap --variant=minbase --include="$include" "$suite" "$work" "$mirror" >"$work.log" 2>&1; then
  tail -n 30 "$work.log" >&2
  [ -f "$work/debootstrap/debootstrap.log" ] && tail -n 30 "$work/debootstrap/debootstrap.log" >&2
  echo "bullseye-root.sh: debootstrap failed (full log: $work.log)" >&2
  exit 1
fi
rm -f "$work.log"
# The downloaded packages (about 90 MB) are not needed once installed.
rm -f "$work"/var/cache/apt/archives/*.deb
# What the root is, for whoever finds it in the cache.
{
  echo "debootstrap --variant=minbase --include=$include $suite $mirror"
  chroot "$work" dpkg-query -W -f='${Package} ${Version}\n' libc6 gcc g++
} >"$work/.heaptap-root"
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "bullseye-root.sh: made in $((SECONDS - start)) s, $(du -sm "$dir" | cut -f1) MB" >&2
echo "$dir"
