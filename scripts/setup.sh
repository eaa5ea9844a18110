#!/usr/bin/env bash
# Installs everything heaptap needs to build and test on Debian 12 (as root), then builds.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# musl-tools: musl-gcc, which builds preload/build/libheaptap-musl.so (the image ships it).
debs=(build-essential g++ make pkg-config valgrind libdw-dev libelf-dev libdeflate-dev binutils file
      libjemalloc2 libjemalloc-dev musl-tools)
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

# Go: the tests read every profile back with `go tool pprof` (a real consumer). A Go
# toolchain in /usr/local/go (the upstream tarball) does; otherwise Debian's golang-go.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "heaptap setup: installing Debian package golang-go (for go tool pprof)" >&2
  if [ "$(id -u)" != 0 ]; then echo "heaptap setup: need root for apt-get" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
# Go 1.25 and later build `go tool pprof` on first use (about 90 s on 2 cores); do it here
# rather than inside a test's time limit. Later runs find it in the Go build cache.
go=$(command -v go || echo /usr/local/go/bin/go)
"$go" tool pprof -h >/dev/null 2>&1 || true  # -h's exit status differs between versions

if [ ! -x node_modules/.bin/node ] || [ package.json -nt node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "heaptap setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
# npm's run-script puts node_modules/.bin (Node >= 22 from the npm registry) first on PATH.
npm run --silent build
