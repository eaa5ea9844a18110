#!/usr/bin/env bash
# Installs a real Prometheus server for the agent's tests (test/agent/prometheus.test.ts):
# Debian's `prometheus` package, which also ships promtool. It only installs: the Debian
# service is not started (the test starts its own server on a free loopback port, with its
# own config and storage in a temporary directory). Prints the two binaries' paths:
#   /usr/bin/prometheus
#   /usr/bin/promtool
# Usage: scripts/peers/prometheus.sh      (as root the first time, on Debian 12)
set -euo pipefail

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  . "$(dirname "$0")/../debs.sh"
  install_service_debs prometheus.sh prometheus
fi
command -v prometheus
command -v promtool
