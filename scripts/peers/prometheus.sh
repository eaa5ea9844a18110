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
  if [ "$(id -u)" != 0 ]; then
    echo "prometheus.sh: Prometheus is not installed and installing it needs root (apt-get install prometheus)" >&2
    exit 1
  fi
  # Test files run in parallel: one install at a time.
  exec 9>/tmp/heaptap-prometheus-install.lock
  flock 9
  if ! command -v prometheus >/dev/null 2>&1; then
    echo "prometheus.sh: installing Debian's prometheus package" >&2
    # Keep the package's service from starting (the usual policy-rc.d convention); put
    # back whatever was there.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 0755 "$policy"
      made_policy=1
    fi
    trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
fi
command -v prometheus
command -v promtool
