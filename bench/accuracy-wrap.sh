#!/bin/sh
# gcc -wrapper for bench/accuracy.ts: runs cc1, and only cc1, under the profiler command
# in $BENCH_CC1_PROFILER (space-separated words, e.g. "heaptrack -o /tmp/x/ht"), so that
# every profiler sees the same single process (heaptrack does not follow children, and
# the gcc driver and the assembler are not what the comparison is about).
case ${1##*/} in
cc1) exec $BENCH_CC1_PROFILER "$@" ;;
*) exec "$@" ;;
esac
