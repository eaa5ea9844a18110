#!/usr/bin/env bash
# Sanitizer runs of the preload:
#  1. the C unit tests (core linked directly) under AddressSanitizer + UBSan;
#  2. the fixture programs under a UBSan build of libheaptap.so (ASan cannot sit behind
#     LD_PRELOAD: its runtime must come first and would own malloc itself).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s -C preload SAN=1 unit
make -s -C preload UBSAN=1 build-ubsan/libheaptap.so
make -s -C test/fixtures
so=$PWD/preload/build-ubsan/libheaptap.so
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
fail=0; pass=0
for cmd in "churn --mib 4 --leak-mib 1" "cxx_new --count 20000" "threads --threads 300" "forker" \
           "dlopener --count 2000" "dlopener --stress 2" "getattr_thread" "lowstack --left 4096"; do
  for rate in 1 4096; do
    if HEAPTAP_DIR=$dir HEAPTAP_SAMPLE_RATE=$rate LD_PRELOAD=$so timeout 120 test/fixtures/build/$cmd >/dev/null 2>"$dir/err" \
       && ! grep -q 'runtime error' "$dir/err"; then
      pass=$((pass+1))
    else
      fail=$((fail+1)); echo "FAILED under UBSan (rate $rate): $cmd"; cat "$dir/err"
    fi
  done
done
echo "sanitize.sh fixtures under UBSan: $pass passed, $fail failed"
[ $fail = 0 ]
