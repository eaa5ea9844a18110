# Sourced by the peer scripts that build one Go tool from the Go module proxy and cache it
# outside the repository (kustomize.sh, helm.sh): the cache layout, finding Go, one build
# at a time (test files run in parallel and may ask at once), and an atomic install.
#
#   go_tool NAME VERSION CHECK PACKAGE [GO_INSTALL_ARGS...]
# builds PACKAGE@vVERSION into ${HEAPTAP_CACHE:-~/.cache/heaptap}/NAME-VERSION/NAME unless a
# usable binary is there (CHECK: the arguments that make it exit 0, e.g. "version"), and
# prints the binary's path.
go_tool() {
  local name=$1 version=$2 check=$3 pkg=$4
  shift 4
  local cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
  local dir="$cache/$name-$version"
  local bin="$dir/$name"
  # shellcheck disable=SC2086  # CHECK is words on purpose
  if [ -x "$bin" ] && "$bin" $check >/dev/null 2>&1; then echo "$bin"; return 0; fi

  local go=""
  if command -v go >/dev/null 2>&1; then go="$(command -v go)"
  elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
  else
    echo "$name: no Go toolchain (need go on PATH or /usr/local/go/bin/go)" >&2
    return 1
  fi

  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  # shellcheck disable=SC2086
  if [ -x "$bin" ] && "$bin" $check >/dev/null 2>&1; then echo "$bin"; return 0; fi

  local work start=$SECONDS
  work="$(mktemp -d "$dir/build.XXXXXX")"
  echo "$name: building $name v$version in $dir" >&2
  if ! GOBIN="$work" GOFLAGS="${GOFLAGS:-} -buildvcs=false" "$go" install "$@" "$pkg@v$version" >&2; then
    rm -rf "$work"
    return 1
  fi
  install -m 0755 "$work/$name" "$bin.tmp"
  mv -f "$bin.tmp" "$bin"
  rm -rf "$work"
  echo "$name: built in $((SECONDS - start)) s" >&2
  echo "$bin"
}
