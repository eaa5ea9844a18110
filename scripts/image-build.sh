#!/usr/bin/env bash
# Builds the file tree of heaptap's container image into a staging directory. The
# Dockerfile's build stage runs exactly this (`scripts/image-build.sh /image-root`, then
# `COPY --from=build /image-root/ /`), and test/deploy/image.test.ts runs it on machines
# without a Docker engine and checks the tree, so the image recipe cannot rot unnoticed.
#
#   scripts/image-build.sh [STAGING]          default: build/image-root
#
# Needs what scripts/setup.sh installs (the C toolchain, musl-tools, libdw-dev, libelf-dev) and an
# installed node_modules (`npm ci`). Makes, under STAGING (and nothing outside it but the
# usual build outputs preload/build/ and src/addon/build/):
#
#   opt/heaptap/lib/libheaptap.so             the preload, for programs on glibc >= 2.17
#   opt/heaptap/lib/libheaptap-musl.so        the same built with musl-gcc, for musl (Alpine)
#   opt/heaptap/preload/build/libheaptap.so   symlink to it, where `heaptap run` looks
#   opt/heaptap/bin/heaptap                   entrypoint: node /opt/heaptap/src/cli.ts "$@"
#   opt/heaptap/bin/heaptap-init              init step: copies both libraries into a volume
#   opt/heaptap/src/**/*.ts                   the sidecar, run by Node without a compile step
#   opt/heaptap/src/addon/build/heaptap.node  the addon (libdw1, libelf1, zlib1g at run time)
#   opt/heaptap/package.json                  "type": "module": the .ts files are ES modules
#   opt/heaptap/node_modules/                 production dependencies only
#
# HEAPTAP_IMAGE_TYPECHECK=0 skips `tsc --noEmit` (the test sets it: npm test has just run
# the same typecheck).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
staging="${1:-build/image-root}"
case "$staging" in /*) ;; *) staging="$root/$staging" ;; esac
prefix="$staging/opt/heaptap"

# npm's run-script puts node_modules/.bin first on PATH; a direct run should use the same
# Node and tsc.
export PATH="$root/node_modules/.bin:$PATH"

step() { echo "image-build: $*" >&2; }

[ -d node_modules/node-addon-api ] || { step "node_modules is missing: run npm ci first"; exit 1; }

step "building the preload and the addon"
make -s -C preload
make -s -C src/addon

if [ "${HEAPTAP_IMAGE_TYPECHECK:-1}" != 0 ]; then
  step "typechecking the TypeScript (tsc --noEmit)"
  tsc --noEmit -p .
fi

step "staging into $prefix"
rm -rf "$prefix"
mkdir -p "$prefix/lib" "$prefix/bin" "$prefix/src/addon/build"

install -m 0755 preload/build/libheaptap.so "$prefix/lib/libheaptap.so"
install -m 0755 preload/build/libheaptap-musl.so "$prefix/lib/libheaptap-musl.so"
install -m 0755 deploy/image/heaptap "$prefix/bin/heaptap"
install -m 0755 deploy/image/heaptap-init "$prefix/bin/heaptap-init"

# The sidecar's sources, without tests or the addon's C/C++ sources (Node only needs the .ts
# files, the report page's script and the built addon; src/native.ts finds it at src/addon/build/heaptap.node).
(cd src && find . -name '*.ts' ! -name '*.d.ts' -print0 | xargs -0 -r cp --parents -t "$prefix/src")
install -m 0755 src/addon/build/heaptap.node "$prefix/src/addon/build/heaptap.node"
# The report page's browser script, inlined into every page the agent's /ui serves.
install -m 0644 src/report/client.js "$prefix/src/report/client.js"

install -m 0644 package.json package-lock.json "$prefix/"

# `heaptap run` (src/cli/run.ts) preloads the library from preload/build/ beside src/.
mkdir -p "$prefix/preload/build"
ln -s ../../lib/libheaptap.so "$prefix/preload/build/libheaptap.so"

# Production dependencies: a copy of node_modules pruned of devDependencies. Pruning a copy
# is offline and installs exactly the versions the lockfile pinned for the build.
cp -a node_modules "$prefix/node_modules"
(cd "$prefix" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error >&2)
find "$prefix/node_modules" -mindepth 1 -maxdepth 1 -type d -empty -delete
rm -rf "$prefix/node_modules/.bin" "$prefix/node_modules/.cache"

# Files readable by everyone, writable by no one but root: the image runs as uid 10001.
chmod -R u=rwX,go=rX "$prefix"
chmod 0755 "$prefix/bin/heaptap" "$prefix/bin/heaptap-init" "$prefix/lib/libheaptap.so" \
  "$prefix/lib/libheaptap-musl.so" \
  "$prefix/src/addon/build/heaptap.node"

step "done: $(du -sh "$prefix" | cut -f1) in $prefix"
