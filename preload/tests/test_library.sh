#!/usr/bin/env bash
# Properties of the built libheaptap.so that users rely on when they copy it into an
# application container: what it links, what it exports, how it uses TLS, and that bad
# configuration never changes the program's behaviour.
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
SO=$PWD/$B/libheaptap.so
FIX=../test/fixtures/build
make -s -C ../test/fixtures >/dev/null || { echo "cannot build fixtures"; exit 1; }
pass=0; fail=0
ok()  { pass=$((pass+1)); echo "  ok   $1"; }
bad() { fail=$((fail+1)); echo "  FAIL $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

needed=$(readelf -d "$SO" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
check "needs nothing beyond glibc at run time ($needed)" \
  '[ -z "$(echo $needed | tr " " "\n" | grep -Ev "^(libc|libm|libdl|libpthread|librt)\.so\.[0-9]+$|^ld-linux")" ]'

exports=$(nm -D --defined-only "$SO" | awk '{print $3}' | sort | tr '\n' ' ')
want="aligned_alloc calloc free malloc malloc_usable_size memalign posix_memalign pvalloc realloc reallocarray valloc "
check "exports exactly the allocator API (got: $exports)" '[ "$exports" = "$want" ]'

# Static TLS only: initial-exec TLS shows as R_X86_64_TPOFF64; general/local-dynamic TLS
# would need DTPMOD64/DTPOFF64 and calls to __tls_get_addr.
check "uses initial-exec TLS only (no DTPMOD/DTPOFF relocations)" \
  '! readelf -r "$SO" | grep -qE "DTPMOD|DTPOFF"'
check "never calls __tls_get_addr (a preloaded trap that aborts stays silent)" \
  'LD_PRELOAD="$PWD/$FIX/libtls_abort.so $SO" HEAPTAP_DIR=$(mktemp -d) HEAPTAP_SAMPLE_RATE=1 $FIX/churn --mib 1 --leak-mib 1 >/dev/null 2>&1'

# A preloaded library that needs a newer glibc than the container's makes every program in
# it refuse to start ("version `GLIBC_2.34' not found"). glibc-pins.h keeps every versioned
# symbol at GLIBC_2.17 or older (CentOS 7's glibc), whatever glibc builds the library.
maxv=$(objdump -T "$SO" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
newer=$(objdump -T "$SO" | awk '/GLIBC_/ { v = $0; sub(/.*GLIBC_/, "", v); sub(/[) ].*/, "", v); print v, $NF }' |
        sort -V | awk '{ split($1, a, "."); if (a[1] > 2 || a[2] > 17) print $2 "@GLIBC_" $1 }' | tr '\n' ' ')
check "requires glibc <= 2.17 (requires $maxv; newer: ${newer:-none})" '[ -z "$newer" ] && [ -n "$maxv" ]'
# glibc < 2.34 defines dlsym@GLIBC_2.2.5 &c. in libdl.so.2 and libpthread.so.0: without
# them NEEDED, a program that links neither fails to start under the library there.
check "names libdl.so.2 and libpthread.so.0 as NEEDED (for glibc < 2.34)" \
  'echo " $needed " | grep -q " libdl.so.2 " && echo " $needed " | grep -q " libpthread.so.0 "'

# The musl build (made beside the default one): the same rules, against musl's libc.so
# alone (musl has no libdl, libpthread or libm apart, and no symbol versions).
MUSL=$PWD/$B/libheaptap-musl.so
if [ "$B" = build ]; then
  mneeded=$(readelf -d "$MUSL" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  check "musl build: needs only musl's libc.so ($mneeded)" '[ "$mneeded" = "libc.so " ]'
  mexports=$(nm -D --defined-only "$MUSL" | awk '{print $3}' | sort | tr '\n' ' ')
  check "musl build: exports exactly the allocator API (got: $mexports)" '[ "$mexports" = "$want" ]'
  check "musl build: uses initial-exec TLS only" \
    'readelf -r "$MUSL" | grep -q TPOFF64 && ! readelf -r "$MUSL" | grep -qE "DTPMOD|DTPOFF"'
fi

# The allocator API's contract (test/fixtures/allocapi.c: EINVAL and ENOMEM leave *out
# alone, alignments, calloc zeroes, overflows fail, realloc keeps contents), on the shims'
# fast and slow paths: at rate 1 every call is sampled, at 4096 most are not, and each new
# thread's first call takes the slow path. The plain run checks the rules against the libc.
api_dir=$(mktemp -d)
check "allocapi: every rule holds without the preload" '$FIX/allocapi 2000 >/dev/null'
for rate in 1 4096 524288; do
  check "allocapi: every rule holds under the preload (glibc, rate $rate)" \
    'HEAPTAP_DIR=$api_dir HEAPTAP_SAMPLE_RATE=$rate LD_PRELOAD="$SO" $FIX/allocapi 2000 >/dev/null'
done
if [ "$B" = build ]; then
  MFIX=../test/fixtures/build-musl
  make -s -C ../test/fixtures musl >/dev/null || { bad "cannot build the musl fixtures"; }
  check "allocapi: every rule holds without the preload (musl)" '$MFIX/allocapi 2000 >/dev/null'
  for rate in 1 4096; do
    check "allocapi: every rule holds under the preload (musl, rate $rate)" \
      'HEAPTAP_DIR=$api_dir HEAPTAP_SAMPLE_RATE=$rate LD_PRELOAD="$MUSL" $MFIX/allocapi 2000 >/dev/null'
  done
fi
rm -rf "$api_dir"

# Bad configuration: one line on stderr starting "heaptap:", same stdout, same exit code.
# The program's own exit status is kept (not grep's, as `$(prog | grep)` would give).
ref_all=$($FIX/forker 2>/dev/null); ref_rc=$?
ref_out=$(printf '%s\n' "$ref_all" | grep -c role)
for cfg in "HEAPTAP_SAMPLE_RATE=abc" "HEAPTAP_SAMPLE_RATE=0" "HEAPTAP_MAX_DEPTH=100000" \
           "HEAPTAP_DIR=/proc/heaptap-no/x" "HEAPTAP_DIR=relative" "HEAPTAP_UNWINDER=magic" \
           "HEAPTAP_FILE_MODE=0200" "HEAPTAP_FOLLOW_CHILDREN=maybe"; do
  err=$(mktemp)
  all=$(env "$cfg" LD_PRELOAD="$SO" $FIX/forker 2>"$err"); rc=$?
  out=$(printf '%s\n' "$all" | grep -c role)
  # forker is two process images (the parent, and the image its fork child execs); the
  # fork child inherits the parent's verdict. One line from each image, nothing else.
  lines=$(wc -l <"$err"); others=$(grep -vc '^heaptap: ' "$err")
  check "$cfg: program runs on unprofiled, says so once per image" \
    '[ "$out" = "$ref_out" ] && [ $rc = $ref_rc ] && [ "$lines" = 2 ] && [ "$others" = 0 ]'
  rm -f "$err"
done

# A HEAPTAP_FILE_MODE that lets group or others write (any local user could then rewrite
# what the agent reads): ignored, not fatal. The program runs as before (same output and
# exit code), profiled, its regions 0600, and the library says so once per process image.
for mode in 0666 0660 0777; do
  d=$(mktemp -d); err=$(mktemp)
  all=$(env HEAPTAP_FILE_MODE=$mode HEAPTAP_DIR="$d" LD_PRELOAD="$SO" $FIX/forker 2>"$err"); rc=$?
  out=$(printf '%s\n' "$all" | grep -c role)
  modes=$(find "$d" -name '*.heaptap' -printf '%m\n' | sort -u | tr '\n' ' ')
  check "HEAPTAP_FILE_MODE=$mode: ignored, program unchanged, regions 0600 ($modes), one warning per image" \
    '[ "$out" = "$ref_out" ] && [ $rc = $ref_rc ] && [ "$modes" = "600 " ] &&
     [ "$(grep -c "^heaptap: HEAPTAP_FILE_MODE=$mode lets group or others write" "$err")" = 2 ] &&
     [ "$(grep -vc "^heaptap: " "$err")" = 0 ]'
  rm -rf "$d" "$err"
done

echo "test_library.sh: $pass passed, $fail failed"
[ $fail = 0 ]
