#!/usr/bin/env bash
# Builds kustomize (sigs.k8s.io/kustomize/kustomize/v5) from the Go module proxy for the
# tests of deploy/ (test/deploy/manifests.test.ts), and prints its path. The binary is
# cached outside the repository, so a second run only prints the path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/kustomize-<version>/kustomize
# Usage: scripts/peers/kustomize.sh              build if needed, print the binary's path
#        KUSTOMIZE_VERSION=5.8.1 scripts/peers/kustomize.sh
# First build: about a minute on 2 cores. Debian 12's kubernetes-client (kubectl 1.20)
# embeds a kustomize too old for deploy/ (labels, patches with a path), hence this.
set -euo pipefail

version="${KUSTOMIZE_VERSION:-5.8.1}"
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
dir="$cache/kustomize-$version"
bin="$dir/kustomize"

usable() { [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; }
if usable; then echo "$bin"; exit 0; fi

go=""
if command -v go >/dev/null 2>&1; then go="$(command -v go)"
elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
else
  echo "kustomize.sh: no Go toolchain (need go on PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi

mkdir -p "$dir"
# Test files run in parallel: one build at a time, the others wait for it.
exec 9>"$dir/.lock"
flock 9
if usable; then echo "$bin"; exit 0; fi

work="$(mktemp -d "$dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "kustomize.sh: building kustomize v$version in $dir (first run: about a minute)" >&2
start=$SECONDS
GOBIN="$work" GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
  "$go" install "sigs.k8s.io/kustomize/kustomize/v5@v$version" >&2
install -m 0755 "$work/kustomize" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "kustomize.sh: built in $((SECONDS - start)) s" >&2
echo "$bin"
