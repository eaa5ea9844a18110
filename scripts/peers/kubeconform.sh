#!/usr/bin/env bash
# kubeconform and the Kubernetes JSON schemas it validates against, for the tests of
# deploy/ and the Helm chart (test/deploy/kubeconform.test.ts). No schema registry is
# reachable here, so the schemas are generated offline, the way the public ones are: from
# the OpenAPI spec in the k8s.io/kubernetes module (api/openapi-spec/swagger.json, from the
# Go module proxy) by openapi2jsonschema (PyPI) with --kubernetes --expanded --strict
# (additionalProperties: false everywhere, so a misspelt field fails). Cached:
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/kubeconform-<version>/kubeconform
#   ${HEAPTAP_CACHE:-~/.cache/heaptap}/kubeconform-<version>/schemas/v<k8s>-standalone-strict/
# Prints "kubeconform=PATH", "schemas=DIR" and "kubernetes=VERSION".
# Usage: scripts/peers/kubeconform.sh
#        KUBECONFORM_VERSION=0.8.0 K8S_SCHEMA_VERSION=1.34.4 scripts/peers/kubeconform.sh
# First run: about a minute (the Go build, an 18 MB module zip, a few PyPI wheels).
#
# openapi2jsonschema 0.9.1 pins PyYAML < 6, whose source no longer builds; it is installed
# without its dependencies, which are then installed at versions that work (PyYAML 6).
set -euo pipefail

version="${KUBECONFORM_VERSION:-0.8.0}"
k8s="${K8S_SCHEMA_VERSION:-1.34.4}"
cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
dir="$cache/kubeconform-$version"
bin="$dir/kubeconform"
schemas="$dir/schemas/v$k8s-standalone-strict"

print() {
  echo "kubeconform=$bin"
  echo "schemas=$schemas"
  echo "kubernetes=$k8s"
}
usable() { [ -x "$bin" ] && "$bin" -v >/dev/null 2>&1 && [ -f "$schemas/.done" ]; }
if usable; then print; exit 0; fi

go=""
if command -v go >/dev/null 2>&1; then go="$(command -v go)"
elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
else
  echo "kubeconform.sh: no Go toolchain (need go on PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "kubeconform.sh: need python3 and pip (Debian python3-pip)" >&2; exit 1; fi
  echo "kubeconform.sh: installing Debian packages python3 python3-pip" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if usable; then print; exit 0; fi

work="$(mktemp -d "$dir/build.XXXXXX")"
cleanup() { chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
start=$SECONDS

if ! { [ -x "$bin" ] && "$bin" -v >/dev/null 2>&1; }; then
  echo "kubeconform.sh: building kubeconform v$version" >&2
  GOBIN="$work/bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" \
    "$go" install "github.com/yannh/kubeconform/cmd/kubeconform@v$version" >&2
  install -m 0755 "$work/bin/kubeconform" "$bin.tmp"
  mv -f "$bin.tmp" "$bin"
fi

echo "kubeconform.sh: generating the Kubernetes $k8s schemas" >&2
# The module into a module cache of its own (read-only files: see cleanup), for its spec.
GOMODCACHE="$work/mod" GOFLAGS="${GOFLAGS:-} -mod=mod" \
  "$go" mod download -json "k8s.io/kubernetes@v$k8s" >"$work/download.json"
spec="$work/mod/k8s.io/kubernetes@v$k8s/api/openapi-spec/swagger.json"
[ -f "$spec" ] || { echo "kubeconform.sh: no $spec in the module" >&2; exit 1; }

python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$work/py" --no-deps \
  'openapi2jsonschema==0.9.1' 'click>=7,<8' 'colorama>=0.4.1,<0.5' 'jsonref>=0.2,<0.3' 'PyYAML>=6,<7' \
  2> >(grep -v "Running pip as the 'root' user" >&2)
(cd "$work" && PYTHONPATH="$work/py" python3 -m openapi2jsonschema.command \
  --kubernetes --expanded --strict --stand-alone -o out "$spec" >"$work/o2j.log" 2>&1) || {
  tail -n 20 "$work/o2j.log" >&2
  echo "kubeconform.sh: openapi2jsonschema failed" >&2
  exit 1
}
for f in deployment-apps-v1.json namespace-v1.json configmap-v1.json; do
  [ -s "$work/out/$f" ] || { echo "kubeconform.sh: openapi2jsonschema made no $f" >&2; exit 1; }
done
echo "k8s.io/kubernetes@v$k8s api/openapi-spec/swagger.json; openapi2jsonschema 0.9.1 --kubernetes --expanded --strict --stand-alone" >"$work/out/.done"
rm -rf "$schemas"
mkdir -p "$(dirname "$schemas")"
mv "$work/out" "$schemas"
echo "kubeconform.sh: ready in $((SECONDS - start)) s" >&2
print
