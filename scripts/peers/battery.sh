#!/usr/bin/env bash
# The compatibility battery's programs (test/compat/battery.test.ts): installs the runtimes
# and servers it runs under the preload (Debian 12 packages) and builds the compiled test
# programs of test/compat/programs/ (Java classes, Rust and Go binaries), cached by source
# hash under ${HEAPTAP_CACHE:-~/.cache/heaptap}/battery/, so a second run only checks and
# prints. Prints one `name=path` line per program or tool the battery runs.
# Usage: scripts/peers/battery.sh     (as root the first time, on Debian 12)
#
# Debian packages: openjdk-17-jdk-headless, sqlite3, redis-server (with redis-tools:
# redis-benchmark, redis-cli), perl, python3; rustc when no usable rustc is on PATH (the
# programs use std only and build with rustc alone), golang-go when there is no go on PATH
# nor in /usr/local/go. The Go program uses cgo, so it also needs gcc (scripts/setup.sh).
# Nothing is skipped: a package that cannot be installed or a program that does not build
# fails this script, and the battery with it.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() { echo "battery.sh: $*" >&2; exit 1; }
arch=$(dpkg --print-architecture)
jdk=/usr/lib/jvm/java-17-openjdk-$arch

# ---- Debian packages ----------------------------------------------------------------------
# what must exist -> the Debian package that brings it
deps=("$jdk/bin/javac openjdk-17-jdk-headless" "/usr/bin/sqlite3 sqlite3"
      "/usr/bin/redis-server redis-server" "/usr/bin/redis-benchmark redis-tools"
      "/usr/bin/redis-cli redis-tools" "/usr/bin/perl perl" "/usr/bin/python3 python3")
rustc_ok() { command -v rustc >/dev/null 2>&1 && rustc --version >/dev/null 2>&1; }
rustc_ok || deps+=("/usr/bin/rustc rustc")
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || deps+=("/usr/bin/go golang-go")

missing() { local d; for d in "${deps[@]}"; do [ -e "${d%% *}" ] || echo "${d#* }"; done | sort -u; }
mapfile -t need < <(missing)
if [ ${#need[@]} -gt 0 ]; then
  # redis-server's package would start a system instance: install_service_debs keeps
  # services from starting, and takes the lock the other peers' installs take.
  . scripts/debs.sh
  install_service_debs battery.sh "${need[@]}"
  mapfile -t need < <(missing)
  [ ${#need[@]} -eq 0 ] || die "installed, but still missing what these packages bring: ${need[*]}"
fi
rustc=$(command -v rustc 2>/dev/null || echo /usr/bin/rustc)
rustc_ok || rustc=/usr/bin/rustc
go=$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)
[ -x "$go" ] || go=/usr/bin/go

# ---- the compiled programs ----------------------------------------------------------------
src=test/compat/programs
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}/battery"
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8

# A build's directory is named by a hash of its sources, the toolchain's version and the
# command: a changed program or compiler is a new build; an old one is left behind (small).
# build NAME 'VERSION' 'COMMAND (run in the directory, $S = the sources directory)' FILES...
build() {
  local name=$1 version=$2 cmd=$3; shift 3
  local key f
  key=$( { echo "$version"; echo "$cmd"; for f in "$@"; do echo "$f"; cat "$src/$f"; done; } | sha256sum | cut -c1-16)
  local dir="$cache/$name-$key"
  if [ ! -f "$dir/.built" ]; then
    echo "battery.sh: building $name" >&2
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    (cd "$dir.tmp" && S="$OLDPWD/$src" && export S && bash -c "$cmd") >&2 || die "building $name failed"
    touch "$dir.tmp/.built"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

javaver=$("$jdk/bin/javac" -version 2>&1)
classes=$(build java "$javaver" "'$jdk/bin/javac' -d . \"\$S/ShortThreads.java\" \"\$S/AllocThreads.java\"" \
  ShortThreads.java AllocThreads.java)
rustver=$("$rustc" --version)
rust=$(build rust "$rustver" "for p in spawn_serial alloc_threads; do '$rustc' -O -o \$p \"\$S/\$p.rs\" || exit 1; done" \
  spawn_serial.rs alloc_threads.rs)
# sites.rs with debug info (its inlined std frames are then in the profile) and in both
# manglings: legacy (_ZN...17h<hash>E, stable rustc's default, which it will not select
# by name without -Z unstable-options) and v0 (_R...)
rust_sites=$(build rust-sites "$rustver" "'$rustc' -O -g -o sites_legacy \"\$S/sites.rs\" && '$rustc' -O -g -o sites_v0 -C symbol-mangling-version=v0 \"\$S/sites.rs\"" \
  sites.rs)
gover=$("$go" version)
# One file outside any module (std only): `go build file.go` needs no go.mod.
gobin=$(build go "$gover" "CGO_ENABLED=1 GOFLAGS=-buildvcs=false '$go' build -o cgo_malloc \"\$S/cgo_malloc.go\"" \
  cgo_malloc.go)

echo "java=$jdk/bin/java"
echo "java_classes=$classes"
echo "rust_spawn_serial=$rust/spawn_serial"
echo "rust_alloc_threads=$rust/alloc_threads"
echo "rust_sites_legacy=$rust_sites/sites_legacy"
echo "rust_sites_v0=$rust_sites/sites_v0"
echo "go_cgo_malloc=$gobin/cgo_malloc"
echo "python3=/usr/bin/python3"
echo "perl=/usr/bin/perl"
echo "sqlite3=/usr/bin/sqlite3"
echo "redis_server=/usr/bin/redis-server"
echo "redis_benchmark=/usr/bin/redis-benchmark"
echo "redis_cli=/usr/bin/redis-cli"
