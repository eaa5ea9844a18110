#!/usr/bin/env bash
# Installs and builds what the tests need beyond heaptap itself, after scripts/setup.sh
# (which it runs first): the packages below, Go for `go tool pprof`, and the test
# fixtures. scripts/test.sh runs it; `./heaptap` does not. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/debs.sh

# nm/readelf and file (packaging checks), valgrind, jemalloc (a second allocator under the
# preload), tmux (a real terminal for the live-line test), setcap (libcap2-bin) and setpriv
# (util-linux), chromium (the report page and the agent's /ui in a real browser, driven by
# playwright-core from npm), strace (the agent opens no path a region names).
debs=(binutils file valgrind libjemalloc2 libjemalloc-dev tmux libcap2-bin util-linux chromium strace)
install_debs "${debs[@]}"

# Go: the tests read every profile back with `go tool pprof` (a real consumer). A Go
# toolchain in /usr/local/go (the upstream tarball) does; otherwise Debian's golang-go.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  install_debs golang-go
fi
# Go 1.25 and later build `go tool pprof` on first use (about 90 s on 2 cores); do it here
# rather than inside a test's time limit. Later runs find it in the Go build cache.
go=$(command -v go || echo /usr/local/go/bin/go)
"$go" tool pprof -h >/dev/null 2>&1 || true  # -h's exit status differs between versions

npm run --silent build:tests
