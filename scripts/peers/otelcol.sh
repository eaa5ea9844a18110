#!/usr/bin/env bash
# Builds an OpenTelemetry Collector for heaptap's tests with the official builder (ocb):
# the otlp receiver (metrics and, behind --feature-gates=+service.profilesSupport,
# profiles), the file exporter (contrib) and the debug exporter. Everything comes from the
# Go module proxy. The binary is cached outside the repository, so a second run only
# prints its path:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/otelcol-<version>/otelcol-heaptap
# Usage: scripts/peers/otelcol.sh            build if needed, print the binary's path
#        OTELCOL_VERSION=0.164.0 scripts/peers/otelcol.sh
set -euo pipefail

version="${OTELCOL_VERSION:-0.164.0}"
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
dir="$cache/otelcol-$version"
bin="$dir/otelcol-heaptap"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
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

mkdir -p "$dir"
work="$(mktemp -d "$dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "otelcol.sh: building OpenTelemetry Collector v$version in $dir (first run: minutes)" >&2
export GOBIN="$work/bin"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
"$go" install "go.opentelemetry.io/collector/cmd/builder@v$version" >&2

cat >"$work/manifest.yaml" <<YAML
dist:
  name: otelcol-heaptap
  description: OpenTelemetry Collector for heaptap's tests
  output_path: $work/dist
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v$version
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter v$version
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter v$version
YAML

# The builder runs 'go' from PATH.
PATH="$(dirname "$go"):$PATH" "$GOBIN/builder" --config "$work/manifest.yaml" >&2
install -m 0755 "$work/dist/otelcol-heaptap" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
echo "$bin"
