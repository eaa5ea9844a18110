#!/bin/sh
# gcc -wrapper for the heaptrack configuration: heaptrack does not follow child processes
# (its preload removes itself from the environment), so gcc runs each of its subprocesses
# (cc1, as) under heaptrack, each with its own output file. $BENCH_HEAPTRACK_OUT is the
# output prefix.
exec heaptrack -o "$BENCH_HEAPTRACK_OUT.$(basename "$1").$$" "$@"
