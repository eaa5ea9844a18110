# Sourced by scripts/setup.sh and scripts/setup-tests.sh: install_debs PKG... installs the
# Debian packages that are not installed yet (apt-get as root; Debian 12).
install_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "heaptap setup: installing Debian packages: ${missing[*]}" >&2
  if [ "$(id -u)" != 0 ]; then echo "heaptap setup: need root for apt-get" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# install_service_debs WHO PKG...: the same for test peers whose packages are daemons
# (prometheus, redis-server): no service is started while they install (the policy-rc.d
# convention; what was there is put back), one install at a time across heaptap's scripts
# (test files run in parallel), dpkg's own lock waited for, and a failure says what apt said.
install_service_debs() {
  local who=$1 missing=() p
  shift
  _missing() {
    missing=()
    for p in "$@"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
  }
  _missing "$@"
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then echo "$who: installing ${missing[*]} needs root (apt-get)" >&2; exit 1; fi
  exec 9>/tmp/heaptap-apt-install.lock
  flock 9
  _missing "$@"   # another script may have installed them meanwhile
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$who: installing Debian packages: ${missing[*]}" >&2
    local policy=/usr/sbin/policy-rc.d made=0 log rc=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 0755 "$policy"
      made=1
    fi
    log=$(mktemp)
    DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 >"$log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        --no-install-recommends "${missing[@]}" >>"$log" 2>&1 || rc=$?
    [ "$made" = 1 ] && rm -f "$policy"
    if [ "$rc" != 0 ]; then
      echo "$who: apt-get could not install ${missing[*]}: $(tail -3 "$log" | tr '\n' ' ')" >&2
      rm -f "$log"
      exit 1
    fi
    rm -f "$log"
  fi
  exec 9>&-
}
