#!/usr/bin/env bash
# What short-lived processes cost under heaptap: a bash loop of N iterations of
# `x=$(echo hello | tr a-z A-Z)` (a fork and an exec'd tr each time, the pattern of shell
# scripts, git hooks and build steps), with no profiler, at the default rate and at rate 1.
# Wall time is hyperfine's median over alternating runs; the ratio is against the run
# without a profiler in the same invocation. Then one run of each heaptap configuration into
# a fresh directory on /dev/shm counts the regions it left and the tmpfs they hold.
#
#   bash bench/shortproc.sh [--quick] [--iterations N] [--runs N]
# Prints a Markdown table (for bench/RESULTS.md, "Short processes").
set -euo pipefail
cd "$(dirname "$0")/.."
N=1000; RUNS=5
while [ $# -gt 0 ]; do
	case $1 in
	--quick) N=100; RUNS=2 ;;
	--iterations) N=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	*) echo "shortproc.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
if ! command -v hyperfine >/dev/null; then
	echo "shortproc.sh: installing Debian package hyperfine" >&2
	[ "$(id -u)" = 0 ] || { echo "shortproc.sh: need root for apt-get" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null; }
fi
make -s -C preload
SO=$PWD/preload/build/libheaptap.so
work=$(mktemp -d /dev/shm/heaptap-shortproc.XXXXXX)
trap 'rm -rf "$work"' EXIT
loop="for i in \$(seq $N); do x=\$(echo hello | tr a-z A-Z); done"
export HEAPTAP_DIR=$work/d
# Regions are removed before each timed run, so every run starts from an empty directory
# (as under `heaptap run` or an agent that deletes ended regions).
hyperfine -N --style none --runs "$RUNS" --warmup 1 --export-json "$work/h.json" \
	--prepare "rm -rf $work/d" \
	-n none "bash -c '$loop'" \
	-n default "env LD_PRELOAD=$SO bash -c '$loop'" \
	-n rate1 "env HEAPTAP_SAMPLE_RATE=1 LD_PRELOAD=$SO bash -c '$loop'" >&2
count() { # NAME ENV...: regions and KiB left by one run
	local name=$1; shift
	rm -rf "$work/d"; mkdir -p "$work/d"
	env "$@" LD_PRELOAD="$SO" bash -c "$loop"
	local n k
	n=$(find "$work/d" -name '*.heaptap' | wc -l)
	k=$(du -sk "$work/d" | cut -f1)
	echo "$name $n $k"
}
{ count default X=1; count rate1 HEAPTAP_SAMPLE_RATE=1; } >"$work/counts"
node -e '
const fs = require("fs");
const [json, counts, n, runs] = process.argv.slice(1);
const r = JSON.parse(fs.readFileSync(json)).results;
const med = (x) => { const s = [...x].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const base = med(r.find((x) => x.command === "none").times);
const c = Object.fromEntries(fs.readFileSync(counts, "utf8").trim().split("\n").map((l) => { const [k, a, b] = l.split(" "); return [k, [+a, +b]]; }));
console.log(`| configuration (${n} iterations, ${runs} runs) | median wall | ratio | per iteration added | regions left | tmpfs |`);
console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
for (const x of r) {
  const m = med(x.times);
  const [regs, kib] = c[x.command] ?? [0, 0];
  const per = x.command === "none" ? "" : `${((m - base) / n * 1e3).toFixed(2)} ms`;
  console.log(`| ${x.command} | ${m.toFixed(2)} s | ${(m / base).toFixed(2)}x | ${per} | ${regs} | ${kib ? (kib / 1024).toFixed(1) + " MiB" : "0"} |`);
}
' "$work/h.json" "$work/counts" "$N" "$RUNS"
