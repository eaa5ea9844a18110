#!/usr/bin/env bash
# Installs what heaptap itself needs on Debian 12 (as root) and builds it: the preload
# library and the addon. This is what `./heaptap` runs the first time; the tests need more
# (scripts/setup-tests.sh, which scripts/test.sh runs). Idempotent: a second run only
# rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/debs.sh

# A C/C++ toolchain for both; libdw and libelf (symbolization), libiberty (Rust demangling)
# and libdeflate (gzip) for the addon; musl-gcc (musl-tools) for preload/build/libheaptap-musl.so, which the image ships.
debs=(build-essential g++ make pkg-config libdw-dev libelf-dev libdeflate-dev libiberty-dev musl-tools)
install_debs "${debs[@]}"

if [ ! -x node_modules/.bin/node ] || [ package.json -nt node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "heaptap setup: npm ci" >&2
  # --prefer-offline: the lockfile pins every version, so packages already in npm's cache
  # need no round trip to the registry.
  npm ci --prefer-offline --no-audit --no-fund --loglevel=error
fi
# npm's run-script puts node_modules/.bin (Node >= 22 from the npm registry) first on PATH.
# Both Makefiles build in parallel safely (directories are order-only prerequisites).
MAKEFLAGS="-j$(nproc) ${MAKEFLAGS:-}" npm run --silent build
