#!/usr/bin/env bash
# Builds Helm (helm.sh/helm/v3) from the Go module proxy for the tests of the chart in
# deploy/helm/heaptap (test/deploy/helm.test.ts: helm lint, helm template, then kubeconform
# and the pod runner on what it renders), and prints its path. Cached outside the
# repository, so a second run only prints the path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/helm-<version>/helm
# Usage: scripts/peers/helm.sh              build if needed, print the binary's path
#        HELM_VERSION=3.22.1 scripts/peers/helm.sh
# First build: 2 to 4 minutes on 2 cores (it shares most modules with kustomize's).
set -euo pipefail

version="${HELM_VERSION:-3.22.1}"
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
dir="$cache/helm-$version"
bin="$dir/helm"

usable() { [ -x "$bin" ] && "$bin" version --short >/dev/null 2>&1; }
if usable; then echo "$bin"; exit 0; fi

go=""
if command -v go >/dev/null 2>&1; then go="$(command -v go)"
elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
else
  echo "helm.sh: no Go toolchain (need go on PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi

mkdir -p "$dir"
# Test files run in parallel: one build at a time, the others wait for it.
exec 9>"$dir/.lock"
flock 9
if usable; then echo "$bin"; exit 0; fi

work="$(mktemp -d "$dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "helm.sh: building helm v$version in $dir (first run: a few minutes)" >&2
start=$SECONDS
# The version Helm reports (a release build sets it the same way).
GOBIN="$work" GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
  "$go" install -ldflags "-X helm.sh/helm/v3/internal/version.version=v$version" \
  "helm.sh/helm/v3/cmd/helm@v$version" >&2
install -m 0755 "$work/helm" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "helm.sh: built in $((SECONDS - start)) s" >&2
echo "$bin"
