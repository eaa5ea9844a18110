#!/usr/bin/env bash
# The program never notices heaptap: regression tests for hangs and crashes found with real
# programs, each run under the built library with a time limit (a hang is a failure), its
# stdout and exit code compared with the unprofiled run's.
#   getattr_thread  new threads that call pthread_getattr_np (the JVM, Rust's std): hung
#   lowstack        malloc with 4 KiB of a 64 KiB thread stack left: SIGSEGV in the unwinder
#   forkfail        fork children whose region cannot be made (full tmpfs, region cap):
#                   SIGSEGV on the error path, half-made .tmp files left behind
# and the cost of a short process: no region without a sample, a small one with a few.
# Needs root for the small tmpfs (CI and the test machines run as root).
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
case "$B" in /*) SO=$B/libheaptap.so ;; *) SO=$PWD/$B/libheaptap.so ;; esac
FIX=$PWD/../test/fixtures/build
make -s -C ../test/fixtures >/dev/null || { echo "cannot build fixtures"; exit 1; }
pass=0; fail=0
ok()  { pass=$((pass+1)); echo "  ok   $1"; }
bad() { fail=$((fail+1)); echo "  FAIL $1"; }
work=$(mktemp -d)
mnt=""
cleanup() { [ -n "$mnt" ] && umount "$mnt" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
LIMIT=${LIMIT:-120}   # seconds; every program here takes well under one unprofiled

# same NAME ENV... -- CMD...: the program under the library gives the unprofiled stdout and
# exit code, within LIMIT.
same() {
  local name=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
  local want got wrc grc
  want=$(timeout $LIMIT "$@" 2>/dev/null); wrc=$?
  got=$(timeout -k 5 $LIMIT env "${envs[@]}" LD_PRELOAD="$SO" "$@" 2>"$work/err"); grc=$?
  if [ "$got" = "$want" ] && [ $grc = $wrc ]; then ok "$name"
  else bad "$name: rc $grc (want $wrc), stdout '$got' (want '$want'); stderr: $(head -c 300 "$work/err")"; fi
}

for rate in 1 4096 524288; do
  d=$(mktemp -d -p "$work")
  same "threads asking pthread_getattr_np for their stack do not hang (rate $rate)" \
    HEAPTAP_DIR=$d HEAPTAP_SAMPLE_RATE=$rate -- $FIX/getattr_thread
done
[ "$($FIX/getattr_thread)" = "ok 50" ] && ok "getattr_thread prints ok 50 unprofiled" || bad "getattr_thread unprofiled"

for rate in 1 524288; do
  for unw in dwarf fp; do
    d=$(mktemp -d -p "$work")
    same "malloc with 4 KiB of a 64 KiB thread stack left runs as unprofiled (rate $rate, $unw)" \
      HEAPTAP_DIR=$d HEAPTAP_SAMPLE_RATE=$rate HEAPTAP_UNWINDER=$unw -- $FIX/lowstack --left 4096
  done
done
d=$(mktemp -d -p "$work")
timeout $LIMIT env HEAPTAP_DIR=$d HEAPTAP_SAMPLE_RATE=1 LD_PRELOAD="$SO" $FIX/lowstack --left 4096 >/dev/null 2>&1
n=$(ls "$d" | grep -c '\.heaptap$')
[ "$n" = 1 ] && ok "the low-stack thread's samples are recorded (1 region)" || bad "low-stack run left $n regions"

# Fork children on a tmpfs with room for the parent's region only: every child's region
# fails to be made (ENOSPC at some step). Each must still exit 7, and nothing half-made stays.
mnt=$work/tmpfs; mkdir -p "$mnt"
if mount -t tmpfs -o size=160k,mode=0700 tmpfs "$mnt"; then
  for rate in 1 524288; do
    rm -rf "${mnt:?}"/*
    same "fork children exit 7 when their region cannot be made on a full tmpfs (rate $rate)" \
      HEAPTAP_DIR=$mnt HEAPTAP_SAMPLE_RATE=$rate LANG=C.UTF-8 LC_ALL=C.UTF-8 -- $FIX/forkfail --children 8
    left=$(ls -A "$mnt" | grep -c '\.tmp$')
    [ "$left" = 0 ] && ok "no half-made region file left behind (rate $rate)" || bad "$left .tmp files left (rate $rate): $(ls -A "$mnt")"
    grep -q 'no space left on device' "$work/err" && ok "the refused children say why, once each (rate $rate)" \
      || bad "no ENOSPC message (rate $rate): $(head -c 300 "$work/err")"
  done
  umount "$mnt"; mnt=""
else
  bad "cannot mount a small tmpfs (the full-tmpfs cases need root)"
fi
# The same failure path without a mount: HEAPTAP_MAX_REGIONS=1 refuses every child.
d=$(mktemp -d -p "$work")
same "fork children exit 7 when the region cap refuses them" \
  HEAPTAP_DIR=$d HEAPTAP_SAMPLE_RATE=1 HEAPTAP_MAX_REGIONS=1 LC_ALL=C.UTF-8 -- $FIX/forkfail --children 8
n=$(ls "$d" | grep -c '\.heaptap$'); refused=$(stat -c %s "$d/.refused" 2>/dev/null || echo 0)
[ "$n" = 1 ] && [ "$refused" -ge 8 ] && ok "the cap holds (1 region) and counts refused images in .refused ($refused)" \
  || bad "cap: $n regions, .refused $refused bytes"

# A short process: none at all without a sample; a small one with a few.
# tr allocates a few KiB (its locale, its buffers): with this seed, no sample point.
d=$(mktemp -d -p "$work")
echo hello | HEAPTAP_DIR=$d HEAPTAP_SEED=1 LD_PRELOAD="$SO" tr a-z A-Z >/dev/null
[ -z "$(ls -A "$d")" ] && ok "a process that allocates but reaches no sample point makes no region" \
  || bad "regions without a sample: $(ls -A "$d")"
d=$(mktemp -d -p "$work")
echo hello | HEAPTAP_DIR=$d HEAPTAP_SAMPLE_RATE=1 LD_PRELOAD="$SO" tr a-z A-Z >/dev/null
kib=$(du -sk "$d" | cut -f1)
[ "$kib" -le 160 ] && ok "a short process at rate 1 costs $kib KiB of tmpfs (at most 160)" || bad "short process costs $kib KiB"

echo "test_safety.sh: $pass passed, $fail failed"
[ $fail = 0 ]
