#!/usr/bin/env bash
# Cost of one sampled stack (preload/unwind.c): builds bench/unwind_cost.c with -O2 and
#   1. runs it: median ns per unwind at depths 10, 30, 64 (wall clock, noisy on shared VMs);
#   2. runs each (mode, depth) under valgrind --tool=callgrind with collection on only
#      around the unwind calls: instructions per unwind (deterministic).
# Both tables give each mode's cost as a ratio to glibc's backtrace() at the same depth.
#   bash bench/unwind_cost.sh               # OUT=bench/out/unwind_cost by default
#   NO_CALLGRIND=1 bash bench/unwind_cost.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/bench/out/unwind_cost}
n=${N:-1000}                       # unwinds per callgrind run
mkdir -p "$out"
"${CC:-cc}" -std=c11 -D_GNU_SOURCE -O2 -g -fasynchronous-unwind-tables \
	-Wall -Wextra -Wshadow -Werror -I"$root/preload" -I"$root/proto" \
	-o "$out/unwind_cost" "$root/bench/unwind_cost.c" "$root/preload/unwind.c" -ldl -lpthread

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) x $cpu, $(ldd --version | head -1 | sed 's/.* //') glibc, $("${CC:-cc}" -dumpfullversion) gcc"
echo
echo "## wall clock (median of 5 interleaved passes; each pass: median of 301 batches of 200 unwinds, or of 3001 single unwinds for dwarf-cold)"
"$out/unwind_cost" | tee "$out/timed.txt" | awk '
	NR == 1 { printf "%-13s %6s %7s %10s %9s %12s\n", $1, $2, $3, $4, $5, "x backtrace"; next }
	{ row[NR] = $0; mode[NR] = $1; depth[NR] = $2; ns[NR] = $4; if ($1 == "backtrace") bt[$2] = $4 }
	END { for (i = 2; i <= NR; i++) { split(row[i], f, " ");
		printf "%-13s %6s %7s %10s %9s %12.3f\n", f[1], f[2], f[3], f[4], f[5], ns[i] / bt[depth[i]] } }'

[ -n "${NO_CALLGRIND:-}" ] && exit 0
command -v valgrind >/dev/null || { echo "valgrind not installed: no instruction counts" >&2; exit 1; }
echo
echo "## instructions per unwind (valgrind --tool=callgrind --collect-atstart=no, $n unwinds each)"
: > "$out/callgrind.txt"
for depth in 10 30 64; do
	for mode in dwarf-warm dwarf-nocache dwarf-cold phdr-nocache fp backtrace; do
		f="$out/callgrind.$mode.$depth"
		frames=$(valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$f" \
			"$out/unwind_cost" --count "$mode" "$depth" "$n" 2>/dev/null | sed -n 's/.*: \([0-9]*\) frames/\1/p')
		ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f")
		[ -n "$ir" ] || ir=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$f")
		echo "$mode $depth $frames $ir" >> "$out/callgrind.txt"
	done
done
awk -v n="$n" '
	BEGIN { printf "%-13s %6s %7s %12s %10s %12s\n", "mode", "depth", "frames", "instr/unwind", "instr/frame", "x backtrace" }
	{ m[NR] = $1; d[NR] = $2; fr[NR] = $3; ir[NR] = $4 / n; if ($1 == "backtrace") bt[$2] = $4 / n }
	END { for (i = 1; i <= NR; i++)
		printf "%-13s %6s %7s %12.0f %10.1f %12.3f\n", m[i], d[i], fr[i], ir[i], ir[i] / fr[i], ir[i] / bt[d[i]] }' \
	"$out/callgrind.txt"
