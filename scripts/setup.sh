#!/usr/bin/env bash
# Installs everything heaptap needs to build and test on Debian 12 (as root), then builds.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(build-essential g++ make pkg-config valgrind libdw-dev libelf-dev binutils file
      libjemalloc2 libjemalloc-dev)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "heaptap setup: installing Debian packages: ${missing[*]}" >&2
  if [ "$(id -u)" != 0 ]; then echo "heaptap setup: need root for apt-get" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x node_modules/.bin/node ] || [ package.json -nt node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "heaptap setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
# npm's run-script puts node_modules/.bin (Node >= 22 from the npm registry) first on PATH.
npm run --silent build
