#!/usr/bin/env bash
# The test command: sets up (Debian packages, npm packages, build) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Real peers the tests talk to (an OpenTelemetry Collector, kustomize, promtool), built from
# the Go module proxy and cached in ~/.cache/heaptap: minutes the first time on a machine,
# nothing afterwards. Not part of setup.sh, which only installs what heaptap itself needs.
npm run --silent peers
npm test
