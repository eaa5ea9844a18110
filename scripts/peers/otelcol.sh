#!/usr/bin/env bash
# Builds an OpenTelemetry Collector for heaptap's tests with the official builder (ocb):
# the otlp receiver (metrics and, behind --feature-gates=+service.profilesSupport,
# profiles), the file exporter (contrib) and the debug exporter. Everything comes from the
# Go module proxy. The binary is cached outside the repository, so a second run only
# prints its path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/otelcol-<version>/otelcol-heaptap
# Usage: scripts/peers/otelcol.sh            build if needed, print the binary's path
#        OTELCOL_VERSION=0.162.0 scripts/peers/otelcol.sh
#
# Why not plain `builder --config`: the builder runs `go mod tidy`, which also fetches the
# modules the components' *tests* import, and the proxy here refuses some of those
# (fileexporter's tests import otlpencodingextension, "403 This module version is not
# available"). So the builder only generates the sources, and we resolve and compile the
# build graph ourselves (go get + go build -mod=mod fetch what the binary imports, nothing
# more). v0.163+ also needs collector/internal/statusutil, which the proxy refuses too;
# v0.162.0 is the newest version that builds here (profiles need v0.148+).
# First build: about 10 minutes on 2 cores with empty Go caches; afterwards instant.
set -euo pipefail

version="${OTELCOL_VERSION:-0.162.0}"
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
dir="$cache/otelcol-$version"
bin="$dir/otelcol-heaptap"

if [ -x "$bin" ] && "$bin" components >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

go=""
if command -v go >/dev/null 2>&1; then go="$(command -v go)"
elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
else
  echo "otelcol.sh: no Go toolchain (need go on PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi
export PATH="$(dirname "$go"):$PATH"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

mkdir -p "$dir"
work="$(mktemp -d "$dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "otelcol.sh: building OpenTelemetry Collector v$version in $dir (first run: minutes)" >&2
start=$SECONDS
GOBIN="$work/bin" go install "go.opentelemetry.io/collector/cmd/builder@v$version" >&2

receiver="go.opentelemetry.io/collector/receiver/otlpreceiver"
debug="go.opentelemetry.io/collector/exporter/debugexporter"
file="github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
cat >"$work/manifest.yaml" <<YAML
dist:
  name: otelcol-heaptap
  description: OpenTelemetry Collector for heaptap's tests
  version: $version-heaptap
  output_path: $work/dist
receivers:
  - gomod: $receiver v$version
exporters:
  - gomod: $debug v$version
  - gomod: $file v$version
YAML
"$work/bin/builder" --config "$work/manifest.yaml" --skip-get-modules --skip-compilation >&2

cd "$work/dist"
go mod init otelcol-heaptap >&2
go get "$receiver@v$version" "$debug@v$version" "$file@v$version" \
  "go.opentelemetry.io/collector/otelcol@v$version" >&2
# The confmap providers main.go imports are stable (v1.x) modules: pin them to the release
# that goes with this collector version (the pdata it pulled in), not to the newest.
stable="$(go list -m -f '{{.Version}}' go.opentelemetry.io/collector/pdata)"
providers=()
for p in env file http https yaml; do
  providers+=("go.opentelemetry.io/collector/confmap/provider/${p}provider@$stable")
done
go get "${providers[@]}" >&2
go build -mod=mod -trimpath -ldflags=-s -o otelcol-heaptap . >&2
install -m 0755 otelcol-heaptap "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "otelcol.sh: built in $((SECONDS - start)) s" >&2
echo "$bin"
