#!/usr/bin/env bash
# A private Docker engine for the image tests (test/deploy/pod.test.ts) and the stand-in
# base images (scripts/peers/image-bases.sh): Debian's docker.io, started by the test itself
# with its data under ${HEAPTAP_CACHE:-~/.cache/heaptap}/docker (so images built once are
# still there next time) and stopped on every path. No system daemon, no bridge, no iptables
# rules: containers get a network namespace of their own with only loopback (the pod's), or
# the host's network for builds (`docker build --network host`: apt-get and npm ci).
#
#   scripts/peers/dockerd.sh run      start the engine, print "ready unix://<socket>" on
#                                     stdout, run until SIGTERM/SIGINT (or stdin closes if
#                                     HEAPTAP_DOCKERD_STDIN=1), then remove every container
#                                     and volume labelled heaptap-test and stop the engine
#   . scripts/peers/dockerd.sh        (sourced) dockerd_start / dockerd_stop, DOCKER_HOST set
#
# One engine per data directory: the first holder of $cache/docker/lock runs it, a second
# caller waits for the lock (up to HEAPTAP_DOCKERD_WAIT seconds, default 1800). The engine's
# run directory (sockets, containerd's state) is fixed too, $cache/docker/run, so that after
# a run that was killed the next start finds its leftover containers and removes them.
# Needs root; installs docker.io (Debian 12: dockerd 20.10, containerd, runc) if missing.
set -euo pipefail

_hd_cache="${HEAPTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heaptap}"
HEAPTAP_DOCKER_DIR="$_hd_cache/docker"
HEAPTAP_DOCKER_BIN=/usr/bin/docker   # Debian's client, the daemon's version (not whatever
                                     # other docker client is first on PATH)
_hd_pid=""

_hd_log() { echo "dockerd.sh: $*" >&2; }

_hd_install() {
  local missing=() p
  for p in docker.io; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && [ -x /usr/sbin/dockerd ] && return 0
  if [ "$(id -u)" != 0 ]; then _hd_log "need root (dockerd)"; return 1; fi
  _hd_log "installing Debian package docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
}

# The processes of containers this engine started, found by the engine's run directory in
# their command line (containerd shims), for the last resort below: a shim outlives its
# engine by design.
_hd_shims() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$HEAPTAP_DOCKER_DIR/run/" && echo "${p#/proc/}"
  done
  return 0
}

_hd_docker() { "$HEAPTAP_DOCKER_BIN" "$@"; }

# Removes what a test left: containers and volumes labelled heaptap-test.
dockerd_clean() {
  local ids
  ids=$(_hd_docker ps -aq --filter label=heaptap-test 2>/dev/null || true)
  [ -n "$ids" ] && _hd_docker rm -f -v $ids >/dev/null 2>&1 || true
  ids=$(_hd_docker volume ls -q --filter label=heaptap-test 2>/dev/null || true)
  [ -n "$ids" ] && _hd_docker volume rm -f $ids >/dev/null 2>&1 || true
  return 0
}

dockerd_start() {
  _hd_install
  mkdir -p "$HEAPTAP_DOCKER_DIR/data" "$HEAPTAP_DOCKER_DIR/run"
  local sock="$HEAPTAP_DOCKER_DIR/run/docker.sock"
  # containerd's socket lives under run/containerd/: a unix socket path has 107 bytes.
  if [ ${#sock} -gt 80 ]; then
    _hd_log "$HEAPTAP_DOCKER_DIR is too long a path for the engine's sockets (set HEAPTAP_CACHE)"
    return 1
  fi
  exec 8>"$HEAPTAP_DOCKER_DIR/lock"
  if ! flock -w "${HEAPTAP_DOCKERD_WAIT:-1800}" 8; then
    _hd_log "another test's engine held $HEAPTAP_DOCKER_DIR/lock for ${HEAPTAP_DOCKERD_WAIT:-1800} s"
    return 1
  fi
  # An engine of a killed run that outlived it (we hold the lock: no one uses it), then
  # the shims of such runs: their containers are ours and over.
  local p old
  old=$(cat "$HEAPTAP_DOCKER_DIR/run/dockerd.pid" 2>/dev/null || true)
  if [ -n "$old" ] && { tr '\0' ' ' <"/proc/$old/cmdline"; } 2>/dev/null | grep -qF -- "--data-root $HEAPTAP_DOCKER_DIR/data"; then
    _hd_log "stopping the engine a killed run left (pid $old)"
    kill -TERM "$old" 2>/dev/null || true
    for p in $(seq 1 150); do kill -0 "$old" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$old" 2>/dev/null || true
  fi
  for p in $(_hd_shims); do kill -KILL "$p" 2>/dev/null || true; done
  export DOCKER_HOST="unix://$sock"
  rm -f "$sock"
  # 8>&-: the engine and what it starts must not hold the lock (a shim would keep it).
  /usr/sbin/dockerd --data-root "$HEAPTAP_DOCKER_DIR/data" --exec-root "$HEAPTAP_DOCKER_DIR/run" \
    --pidfile "$HEAPTAP_DOCKER_DIR/run/dockerd.pid" -H "$DOCKER_HOST" \
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none --userland-proxy=false \
    --log-level=warn >"$HEAPTAP_DOCKER_DIR/dockerd.log" 2>&1 8>&- </dev/null &
  _hd_pid=$!
  local i
  for i in $(seq 1 300); do
    if _hd_docker version >/dev/null 2>&1; then
      dockerd_clean
      return 0
    fi
    if ! kill -0 "$_hd_pid" 2>/dev/null; then
      tail -n 20 "$HEAPTAP_DOCKER_DIR/dockerd.log" >&2
      _hd_log "dockerd exited at start (log: $HEAPTAP_DOCKER_DIR/dockerd.log)"
      _hd_pid=""
      return 1
    fi
    sleep 0.2
  done
  _hd_log "dockerd did not answer within 60 s (log: $HEAPTAP_DOCKER_DIR/dockerd.log)"
  dockerd_stop
  return 1
}

# Removes the test containers, then stops the engine (SIGTERM: it stops what still runs
# and unmounts), SIGKILL after 30 s, and last kills any shim left from it.
dockerd_stop() {
  [ -n "$_hd_pid" ] || return 0
  dockerd_clean
  kill -TERM "$_hd_pid" 2>/dev/null || true
  local i
  for i in $(seq 1 150); do
    kill -0 "$_hd_pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$_hd_pid" 2>/dev/null || true
  wait "$_hd_pid" 2>/dev/null || true
  _hd_pid=""
  local p
  for p in $(_hd_shims); do kill -KILL "$p" 2>/dev/null || true; done
  # The engine's bind mount of the host's network namespace.
  umount "$HEAPTAP_DOCKER_DIR/run/netns/default" 2>/dev/null || true
  flock -u 8 2>/dev/null || true
  return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    run)
      watcher=""
      trap 'dockerd_stop; [ -z "$watcher" ] || kill "$watcher" 2>/dev/null || true' EXIT
      trap 'exit 143' TERM
      trap 'exit 130' INT
      dockerd_start
      echo "ready $DOCKER_HOST"
      # Until a signal (the trap runs when `wait` returns), the engine's end, or, with
      # HEAPTAP_DOCKERD_STDIN=1, the end of stdin (the parent closed it or died).
      if [ "${HEAPTAP_DOCKERD_STDIN:-0}" = 1 ]; then
        exec 7<&0
        cat <&7 >/dev/null &
        watcher=$!
      fi
      while kill -0 "$_hd_pid" 2>/dev/null; do
        if [ -n "$watcher" ] && ! kill -0 "$watcher" 2>/dev/null; then exit 0; fi
        sleep 1 &
        wait $! || true
      done
      _hd_log "dockerd exited by itself (log: $HEAPTAP_DOCKER_DIR/dockerd.log)"
      exit 1
      ;;
    *)
      echo "usage: scripts/peers/dockerd.sh run" >&2
      exit 2
      ;;
  esac
fi
