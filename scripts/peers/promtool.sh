#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module proxy for the tests of deploy/
# (test/deploy/configs.test.ts: `promtool check config`, which also checks the rule files
# the config names), and prints its path. Cached outside the repository, so a second run
# only prints the path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/promtool-<version>/promtool
# Usage: scripts/peers/promtool.sh             build if needed, print the binary's path
#        PROMTOOL_VERSION=0.305.0 scripts/peers/promtool.sh   (module version: v0.305.0 is 3.5.0)
#
# Why not Debian's: its prometheus package is built without the Kubernetes service
# discovery, so its promtool rejects kubernetes_sd_configs. Why not `go install ...@v`:
# Prometheus's go.mod has a replace directive, which `go install pkg@version` refuses; so
# a throwaway module requires Prometheus, repeats its replace lines, and builds promtool.
# Newer releases need pseudo-versions that the module proxy here does not serve.
# First build: about 10 minutes on 2 cores (all of Prometheus's service discoveries).
set -euo pipefail

version="${PROMTOOL_VERSION:-0.305.0}"
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
dir="$cache/promtool-$version"
bin="$dir/promtool"
module="github.com/prometheus/prometheus"

usable() { [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; }
if usable; then echo "$bin"; exit 0; fi

go=""
if command -v go >/dev/null 2>&1; then go="$(command -v go)"
elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
else
  echo "promtool.sh: no Go toolchain (need go on PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

mkdir -p "$dir"
# Test files run in parallel: one build at a time, the others wait for it.
exec 9>"$dir/.lock"
flock 9
if usable; then echo "$bin"; exit 0; fi

work="$(mktemp -d "$dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "promtool.sh: building promtool ($module v$version) in $dir (first run: about 10 minutes)" >&2
start=$SECONDS

gomod="$("$go" mod download -json "$module@v$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$gomod" ] || { echo "promtool.sh: cannot download $module@v$version" >&2; exit 1; }
if grep -q '^replace[[:space:]]*($' "$gomod"; then
  echo "promtool.sh: $module v$version has a replace block; extend this script" >&2
  exit 1
fi
{
  echo "module heaptap.invalid/promtool"
  echo
  echo "go 1.24"
  echo
  grep '^replace ' "$gomod" || true
} >"$work/go.mod"

cd "$work"
"$go" get "$module/cmd/promtool@v$version" >&2
"$go" build -trimpath -ldflags=-s -o promtool "$module/cmd/promtool" >&2
install -m 0755 promtool "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "promtool.sh: built in $((SECONDS - start)) s" >&2
echo "$bin"
