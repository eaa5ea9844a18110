#!/usr/bin/env bash
# heaptap's overhead and accuracy against no profiler and against other heap profilers.
#
#   bash bench/run.sh           full run (npm run bench): 5 rounds, tens of minutes;
#                               rewrites its own sections of bench/RESULTS.md
#   bash bench/run.sh --quick   1 round at small sizes, under 2 minutes (93 s on 2 cores, 37 s
#                               of it accuracy; npm run bench:quick, CI): checks that every
#                               configuration runs and gives its numbers; results only in
#                               bench/out/quick/
#   options: --rounds N, --only w1,w2 (workloads: churn churn-fp gcc python redis
#            mallocloop callgrind accuracy), --out DIR
#
# Every workload runs each of its configurations once per round, in a fixed order
# (none, heaptap, heaptap-r1, ..., then none again in the next round), so slow drifts of
# the machine hit all configurations alike; a configuration's ratio is taken per round
# against that round's "none" run, and the median and min-max over rounds are reported.
# Wall time is measured with date +%s%N around the run; user+sys CPU and peak RSS (the
# largest process of the tree) come from GNU time. Nothing here asserts on a time: the
# run fails only when a configuration does not run, or does not leave its profile.
#
# "accuracy" is bench/accuracy.ts: per-site figures against exact ones (churn's truth,
# heaptrack, massif's peak); nothing in it is timed. `--only accuracy` runs it alone and,
# in full mode, rewrites only its section of bench/RESULTS.md.
#
# Installs what it needs with apt-get (Debian 12, as root), and builds the preload, the
# test fixtures and bench/'s helper programs itself (the addon and the npm packages come
# from scripts/setup.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
MODE=full
ROUNDS=
ONLY=
OUT=
while [ $# -gt 0 ]; do
	case $1 in
	--quick) MODE=quick ;;
	--full) MODE=full ;;
	--rounds) ROUNDS=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h|--help) sed -n '2,27p' "$0"; exit 0 ;;
	*) echo "bench: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$OUT" ] || OUT=$BENCH/out/$MODE
say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---- sizes ------------------------------------------------------------------------------
# Full sizes give runs of about 2-10 s without a profiler on a 2-core machine; quick ones
# about 0.3 s. "small" sizes are for valgrind massif, which runs the program about 20-50x
# slower (and on one core at a time), for tcmalloc's heap profiler, which unwinds
# (libunwind) and records every allocation under a global lock (50-300x on these
# workloads), and on gcc for heaptrack: they are compared with "none-small",
# "tcmalloc-small" and "heaptap-r1-small", runs of the same reduced size.
if [ "$MODE" = quick ]; then
	: "${ROUNDS:=1}"
	CHURN_MIB=48; CHURN_SMALL_MIB=6
	GCC_MODULES=24; GCC_SMALL_MODULES=4
	PY_ROUNDS=40; PY_SMALL_ROUNDS=6
	REDIS_N=2000; REDIS_SMALL_N=500
	LOOP_N=5000000; CG_N=200000; CG_CHURN_MIB=1; CG_PY_ROUNDS=1
	RUN_TIMEOUT=120
else
	: "${ROUNDS:=5}"
	CHURN_MIB=1536; CHURN_SMALL_MIB=48
	GCC_MODULES=600; GCC_SMALL_MODULES=60
	PY_ROUNDS=400; PY_SMALL_ROUNDS=20
	REDIS_N=60000; REDIS_SMALL_N=4000
	LOOP_N=100000000; CG_N=10000000; CG_CHURN_MIB=4; CG_PY_ROUNDS=5
	RUN_TIMEOUT=1800
fi
CHURN_THREADS=2
HEAPTRACK_AS_LIMIT=$((8 << 30))
CHURN_LEAK_MIB=16
WORKLOADS=(churn churn-fp gcc python redis mallocloop callgrind accuracy)
if [ -n "$ONLY" ]; then IFS=, read -r -a WORKLOADS <<<"$ONLY"; fi

# ---- dependencies -----------------------------------------------------------------------
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
LIBDIR=/usr/lib/$MULTIARCH
JEMALLOC=$LIBDIR/libjemalloc.so.2
TCMALLOC=$LIBDIR/libtcmalloc.so.4   # the full tcmalloc: allocator + heap profiler
PYTHON=/usr/bin/python3             # Debian's, not a pyenv shim (no exec chain)

# what must exist -> the Debian package that brings it
DEPS=(
	"/usr/bin/gcc gcc" "/usr/bin/make make" "$PYTHON python3" "/usr/bin/time time"
	"/usr/bin/valgrind valgrind" "/usr/bin/callgrind_annotate valgrind"
	"/usr/bin/heaptrack heaptrack" "/usr/bin/zstd zstd"
	"/usr/bin/redis-server redis-server" "/usr/bin/redis-benchmark redis-tools"
	"/usr/bin/redis-cli redis-tools" "/usr/bin/sqlite3 sqlite3"
	"$JEMALLOC libjemalloc2" "/usr/include/jemalloc/jemalloc.h libjemalloc-dev"
	"$TCMALLOC libgoogle-perftools4" "/usr/bin/google-pprof google-perftools"
	"$LIBDIR/libtcmalloc.so libgoogle-perftools-dev"
)
ensure_deps() {
	local missing=() d
	for d in "${DEPS[@]}"; do
		[ -e "${d%% *}" ] || missing+=("${d#* }")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	say "installing Debian packages: ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >"$OUT/apt.log" 2>&1 || die "apt-get update failed (see $OUT/apt.log)"
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$OUT/apt.log" 2>&1; then
		die "apt-get install ${missing[*]} failed (see $OUT/apt.log): $(tail -3 "$OUT/apt.log" | tr '\n' ' ')"
	fi
	for d in "${DEPS[@]}"; do
		[ -e "${d%% *}" ] || die "package ${d#* } installed but ${d%% *} is still missing"
	done
	# redis-server's package may start a system instance; we start our own on another port.
}

# ---- bookkeeping ------------------------------------------------------------------------
mkdir -p "$OUT"
WORK=$OUT/work
rm -rf "$WORK"
rm -rf "$OUT/accuracy"
rm -f "$OUT"/failed-*.log "$OUT"/{results.md,callgrind_r1_churn.md,callgrind_r1_python.md,runs.tsv,commands.tsv} \
	"$OUT"/{callgrind.tsv,callgrind_gcc.tsv,failures.txt,machine.txt,sizes.txt,redis_allocator.txt}
mkdir -p "$WORK"
SHMROOT=$(mktemp -d /dev/shm/heaptap-bench.XXXXXX)
REDIS_PID=
cleanup() {
	if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then kill "$REDIS_PID" 2>/dev/null || true; fi
	rm -rf "$SHMROOT"
}
trap cleanup EXIT
RAW=$OUT/runs.tsv
CMDS=$OUT/commands.tsv
FAILS=$OUT/failures.txt
printf 'workload\tconfig\tround\twall_ns\tuser_s\tsys_s\tmaxrss_kb\tstatus\n' >"$RAW"
printf 'workload\tconfig\tcommand\n' >"$CMDS"
: >"$FAILS"
T0=$(date +%s)

# ---- configurations ---------------------------------------------------------------------
# Sets CFG_ENV (VAR=value words for env) and CFG_PREFIX (a command the program runs under)
# for configuration $1, with $2 a fresh directory for the profiler's output.
HT_LIB=$ROOT/preload/build/libheaptap.so
config() {
	local c=$1 d=$2
	CFG_ENV=()
	CFG_PREFIX=()
	case $c in
	none|none-small) ;;
	tcmalloc-small) CFG_ENV=(LD_PRELOAD="$TCMALLOC") ;;
	heaptap) CFG_ENV=(LD_PRELOAD="$HT_LIB" HEAPTAP_DIR="$d") ;;
	heaptap-r1|heaptap-r1-small) CFG_ENV=(LD_PRELOAD="$HT_LIB" HEAPTAP_DIR="$d" HEAPTAP_SAMPLE_RATE=1) ;;
	heaptap-fp) CFG_ENV=(LD_PRELOAD="$HT_LIB" HEAPTAP_DIR="$d" HEAPTAP_UNWINDER=fp) ;;
	heaptap-fp-r1) CFG_ENV=(LD_PRELOAD="$HT_LIB" HEAPTAP_DIR="$d" HEAPTAP_UNWINDER=fp HEAPTAP_SAMPLE_RATE=1) ;;
	jemalloc) CFG_ENV=(LD_PRELOAD="$JEMALLOC") ;;
	# lg_prof_sample:19 = a sample every 512 KiB on average, heaptap's default rate;
	# prof_final writes the profile at exit, as heaptap's region is there at exit.
	jemalloc-prof) CFG_ENV=(LD_PRELOAD="$JEMALLOC" MALLOC_CONF="prof:true,lg_prof_sample:19,prof_final:true,prof_prefix:$d/jeprof") ;;
	tcmalloc) CFG_ENV=(LD_PRELOAD="$TCMALLOC") ;;
	tcmalloc-heapprof) CFG_ENV=(LD_PRELOAD="$TCMALLOC" HEAPPROFILE="$d/tc") ;;
	heaptrack) CFG_PREFIX=(heaptrack -o "$d/ht") ;;
	massif) CFG_PREFIX=(valgrind --tool=massif --trace-children=yes -q "--massif-out-file=$d/massif.out.%p") ;;
	*) die "unknown configuration $c" ;;
	esac
}

# The profile a configuration must leave in its directory, as a find(1) -name pattern.
profile_glob() {
	case $1 in
	heaptap*) echo '*.heaptap' ;;
	jemalloc-prof) echo 'jeprof.*.heap' ;;
	tcmalloc-heapprof) echo 'tc.*.heap' ;;
	heaptrack) echo 'ht*.zst' ;;
	massif) echo 'massif.out.*' ;;
	*) echo '' ;;
	esac
}

STD_CONFIGS=(none heaptap heaptap-r1 jemalloc jemalloc-prof tcmalloc heaptrack
	none-small tcmalloc-small tcmalloc-heapprof massif)
configs_of() {
	case $1 in
	churn|python|redis) echo "${STD_CONFIGS[*]}" ;;
	# heaptrack runs gcc at the reduced size: at the full size its heaptrack_interpret
	# grows past 18 GiB when cc1 exits and dies of std::bad_alloc (heaptrack 1.4.0).
	gcc) echo "none heaptap heaptap-r1 jemalloc jemalloc-prof tcmalloc" \
		"none-small heaptap-r1-small heaptrack tcmalloc-small tcmalloc-heapprof massif" ;;
	churn-fp) echo "none heaptap heaptap-fp heaptap-r1 heaptap-fp-r1" ;;
	mallocloop) echo "none heaptap" ;;
	esac
}

# Prints the workload's command (one word a line) for a size class (big or small); $3 is
# the run's directory (for outputs the program writes).
workload_cmd() {
	local w=$1 size=$2 d=$3
	case $w in
	churn|churn-fp)
		local mib=$CHURN_MIB bin=$ROOT/test/fixtures/build/churn
		[ "$size" = small ] && mib=$CHURN_SMALL_MIB
		[ "$w" = churn-fp ] && bin=$ROOT/test/fixtures/build/churn-fp
		printf '%s\n' "$bin" --threads "$CHURN_THREADS" --mib "$mib" --leak-mib "$CHURN_LEAK_MIB" --seed 1 ;;
	gcc)
		local src=$WORK/gen_big.c
		[ "$size" = small ] && src=$WORK/gen_small.c
		printf '%s\n' gcc -O2 -c "$src" -o "$d/out.o" ;;
	python)
		local n=$PY_ROUNDS
		[ "$size" = small ] && n=$PY_SMALL_ROUNDS
		printf '%s\n' "$PYTHON" -s "$BENCH/pychurn.py" "$n" ;;
	mallocloop)
		printf '%s\n' "$BENCH/build/mallocloop" "$LOOP_N" ;;
	esac
}

# Records one result line; $8 is "ok" or the reason it failed.
record() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RAW"
	if [ "$8" != ok ]; then
		local keep=$OUT/failed-$1-$2-$3.log
		cp "$SHMROOT/run.log" "$keep" 2>/dev/null || true
		printf '%s %s round %s: %s (log: %s)\n' "$1" "$2" "$3" "$8" "$keep" >>"$FAILS"
		say "FAILED: $1 $2 round $3: $8 (log: $keep)"
	fi
}

# Shows a command as one line with the run's own paths replaced by names.
show_cmd() {
	local s
	s=$(printf '%q ' "$@")
	s=${s//$SHMROOT\/run/\$PROFILE_DIR}
	s=${s//$SHMROOT\/cg/\$PROFILE_DIR}
	s=${s//$WORK/\$WORK}
	s=${s//$ROOT/.}
	s=${s//\\ / }
	printf '%s' "${s% }"
}

# Checks the run's status, time file and profile; prints "ok" or the reason.
check_run() {
	local rc=$1 tf=$2 c=$3 d=$4 g
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "timed out after ${RUN_TIMEOUT}s"; return; fi
	if [ "$rc" != 0 ]; then echo "exit status $rc"; return; fi
	if ! grep -qE '^[0-9.]+ [0-9.]+ [0-9]+$' "$tf" 2>/dev/null; then echo "no time/RSS numbers from GNU time"; return; fi
	g=$(profile_glob "$c")
	if [ -n "$g" ] && [ -z "$(find "$d" -name "$g" -size +0 -print -quit 2>/dev/null)" ]; then
		echo "left no profile ($g) in its directory"; return
	fi
	echo ok
}

# Runs workload $1 under configuration $2 for round $3.
run_one() {
	local w=$1 c=$2 r=$3 size=big d tf log rc start end status u s m
	case $c in none-small|heaptap-r1-small|tcmalloc-small|tcmalloc-heapprof|massif) size=small ;; esac
	[ "$w" = gcc ] && [ "$c" = heaptrack ] && size=small
	d=$SHMROOT/run
	rm -rf "$d"; mkdir -p "$d"
	tf=$WORK/time.txt; log=$d.log
	rm -f "$tf"
	config "$c" "$d"
	if [ "$w" = redis ]; then run_redis "$c" "$r" "$size" "$d"; return; fi
	local cmd
	mapfile -t cmd < <(workload_cmd "$w" "$size" "$d")
	# In the environment, not in the command: heaptrack would profile env(1), not python.
	[ "$w" = python ] && CFG_ENV=(PYTHONMALLOC=malloc "${CFG_ENV[@]}")
	if [ "$w" = gcc ] && [ "$c" = heaptrack ]; then
		# heaptrack does not follow children: gcc runs cc1 and as under it (-wrapper).
		CFG_PREFIX=()
		CFG_ENV=(BENCH_HEAPTRACK_OUT="$d/ht")
		cmd+=(-wrapper "$BENCH/heaptrack-wrap.sh")
	fi
	[ "$r" = 1 ] && printf '%s\t%s\t%s\n' "$w" "$c" "$(show_cmd env "${CFG_ENV[@]}" "${CFG_PREFIX[@]}" "${cmd[@]}")" >>"$CMDS"
	# heaptrack's interpreter can grow without bound (see gcc above): cap its address
	# space so that a blow-up fails this run and not the machine.
	local cap=()
	[ "$c" = heaptrack ] && cap=(prlimit "--as=$HEAPTRACK_AS_LIMIT" --)
	start=$(date +%s%N)
	set +e
	timeout -k 10 "$RUN_TIMEOUT" "${cap[@]}" /usr/bin/time -f '%U %S %M' -o "$tf" \
		env "${CFG_ENV[@]}" "${CFG_PREFIX[@]}" "${cmd[@]}" >"$log" 2>&1
	rc=$?
	set -e
	end=$(date +%s%N)
	status=$(check_run "$rc" "$tf" "$c" "$d")
	# GNU time puts "Command exited with non-zero status N" first when the program fails.
	read -r u s m < <(tail -n 1 "$tf" 2>/dev/null) || true
	[[ "$u $s $m" =~ ^[0-9.]+\ [0-9.]+\ [0-9]+$ ]] || { u=0; s=0; m=0; }
	record "$w" "$c" "$r" "$((end - start))" "${u:-0}" "${s:-0}" "${m:-0}" "$status"
	[ "$status" = ok ] && rm -f "$log"
	rm -rf "$d"
}

# redis: the server runs under the configuration; redis-benchmark (never profiled) sends a
# fixed number of requests over loopback and its wall time is the measurement. CPU and
# peak RSS are the server's.
REDIS_PORT=$((20000 + $$ % 20000))
while redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do REDIS_PORT=$((REDIS_PORT + 1)); done
run_redis() {
	local c=$1 r=$2 size=$3 d=$4 n=$REDIS_N tf=$WORK/time.txt log=$4.log rc status start end u s m i
	[ "$size" = small ] && n=$REDIS_SMALL_N
	local server=(redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
		--dir "$d" --logfile "$d/redis.log")
	local client=(redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -n "$n" -c 20 -P 8 -r 100000 -d 64
		-t set,get,lpush,lpop,sadd,hset,lrange_100 --csv)
	if [ "$r" = 1 ]; then
		printf '%s\t%s\t%s ; %s\n' redis "$c" "$(show_cmd env "${CFG_ENV[@]}" "${CFG_PREFIX[@]}" "${server[@]}")" "$(show_cmd "${client[@]}")" >>"$CMDS"
	fi
	timeout -k 10 "$RUN_TIMEOUT" /usr/bin/time -f '%U %S %M' -o "$tf" \
		env "${CFG_ENV[@]}" "${CFG_PREFIX[@]}" "${server[@]}" >"$log" 2>&1 &
	REDIS_PID=$!
	for ((i = 0; i < 600; i++)); do
		redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
		kill -0 "$REDIS_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [ "$r" = 1 ] && [ "$c" = none ]; then
		redis-cli -p "$REDIS_PORT" info memory 2>/dev/null | tr -d '\r' | grep '^mem_allocator:' >"$OUT/redis_allocator.txt" || true
	fi
	start=$(date +%s%N)
	set +e
	timeout 600 "${client[@]}" >"$d/bench.csv" 2>"$d/bench.err"
	local crc=$?
	end=$(date +%s%N)
	redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
	wait "$REDIS_PID"
	rc=$?
	set -e
	REDIS_PID=
	if [ "$crc" != 0 ] || ! grep -q '"SET"' "$d/bench.csv"; then
		status="redis-benchmark failed (status $crc): $(head -c 300 "$d/bench.err" | tr '\n' ' ')"
	else
		# redis-server exits 0 on SHUTDOWN; heaptrack's wrapper script may return its status too.
		status=$(check_run "$rc" "$tf" "$c" "$d")
	fi
	# GNU time puts "Command exited with non-zero status N" first when the program fails.
	read -r u s m < <(tail -n 1 "$tf" 2>/dev/null) || true
	[[ "$u $s $m" =~ ^[0-9.]+\ [0-9.]+\ [0-9]+$ ]] || { u=0; s=0; m=0; }
	record redis "$c" "$r" "$((end - start))" "${u:-0}" "${s:-0}" "${m:-0}" "$status"
	[ "$status" = ok ] && { cp "$d/bench.csv" "$WORK/redis-$c-$r.csv"; rm -f "$log"; }
	rm -rf "$d"
}

# ---- callgrind: instructions per malloc/free pair -----------------------------------------
# Ir of mallocloop N minus Ir of mallocloop 0 (start-up and exit), divided by N, without and
# with the preload at the default rate; and the self Ir of libheaptap's malloc and free.
run_callgrind() {
	local d=$SHMROOT/cg c n f rc
	rm -rf "$d"; mkdir -p "$d"
	printf 'config\tn\tir_total\tir_heaptap_malloc\tir_heaptap_free\tir_heaptap_other\n' >"$OUT/callgrind.tsv"
	for c in none heaptap; do
		for n in 0 "$CG_N"; do
			f=$WORK/callgrind.$c.$n
			config "$c" "$d"
			[ "$n" = "$CG_N" ] && printf 'callgrind\t%s\t%s\n' "$c" "$(show_cmd env "${CFG_ENV[@]}" valgrind --tool=callgrind "--callgrind-out-file=$f" "$BENCH/build/mallocloop" "$n")" >>"$CMDS"
			set +e
			timeout -k 10 "$RUN_TIMEOUT" env "${CFG_ENV[@]}" valgrind --tool=callgrind -q \
				--callgrind-out-file="$f" "$BENCH/build/mallocloop" "$n" >"$f.log" 2>&1
			rc=$?
			set -e
			if [ "$rc" != 0 ] || [ ! -s "$f" ]; then
				printf 'callgrind %s N=%s: status %s\n' "$c" "$n" "$rc" >>"$FAILS"
				say "FAILED: callgrind $c N=$n (status $rc, log $f.log)"
				continue
			fi
			callgrind_annotate --inclusive=no --threshold=100 "$f" >"$f.txt" 2>&1 || true
			"$PYTHON" "$BENCH/summarize.py" callgrind-row "$c" "$n" "$f" >>"$OUT/callgrind.tsv" \
				|| printf 'callgrind %s N=%s: no totals in its output\n' "$c" "$n" >>"$FAILS"
		done
	done
	if [ -z "$(find "$d" -name '*.heaptap' -print -quit)" ]; then
		printf 'callgrind heaptap: left no region file\n' >>"$FAILS"
	fi
	rm -rf "$d"

	# gcc at the reduced size, every process (gcc, cc1, as) counted: the overhead of the
	# default rate in instructions, which the noise of a shared machine cannot blur.
	# (full mode only: valgrind's start-up on cc1 alone would take a third of quick's budget)
	local gcc_cg=(none heaptap)
	[ "$MODE" = quick ] && gcc_cg=()
	for c in "${gcc_cg[@]}"; do
		rm -rf "$d"; mkdir -p "$d"
		config "$c" "$d"
		f=$WORK/callgrind.gcc.$c
		printf 'callgrind\tgcc %s\t%s\n' "$c" "$(show_cmd env "${CFG_ENV[@]}" valgrind --tool=callgrind --trace-children=yes "--callgrind-out-file=$f.%p" gcc -O2 -c "$WORK/gen_small.c" -o "$d/out.o")" >>"$CMDS"
		set +e
		timeout -k 10 "$RUN_TIMEOUT" env "${CFG_ENV[@]}" valgrind --tool=callgrind -q --trace-children=yes \
			"--callgrind-out-file=$f.%p" gcc -O2 -c "$WORK/gen_small.c" -o "$d/out.o" >"$f.log" 2>&1
		rc=$?
		set -e
		if [ "$rc" != 0 ] || ! "$PYTHON" "$BENCH/summarize.py" callgrind-total "$c" "$f".[0-9]* >>"$OUT/callgrind_gcc.tsv"; then
			printf 'callgrind gcc %s: status %s (log %s.log)\n' "$c" "$rc" "$f" >>"$FAILS"
			say "FAILED: callgrind gcc $c"
		fi
	done
	rm -rf "$d"

	# Where heaptap's time goes when every allocation is sampled: libheaptap's Ir per
	# allocation by source file, on churn (shallow stacks) and python (deep ones).
	local name label cmd
	for name in churn python; do
		rm -rf "$d"; mkdir -p "$d"
		config heaptap-r1 "$d"
		f=$WORK/callgrind.r1.$name
		if [ "$name" = churn ]; then
			label="churn --threads 1 --mib $CG_CHURN_MIB, rate 1"
			cmd=("$ROOT/test/fixtures/build/churn" --threads 1 --mib "$CG_CHURN_MIB" --leak-mib 1)
		else
			label="python3 pychurn.py $CG_PY_ROUNDS (PYTHONMALLOC=malloc), rate 1"
			cmd=("$PYTHON" -s "$BENCH/pychurn.py" "$CG_PY_ROUNDS")
			CFG_ENV=(PYTHONMALLOC=malloc "${CFG_ENV[@]}")
		fi
		printf 'callgrind\theaptap-r1 (%s)\t%s\n' "$name" "$(show_cmd env "${CFG_ENV[@]}" valgrind --tool=callgrind "--callgrind-out-file=$f" "${cmd[@]}")" >>"$CMDS"
		set +e
		timeout -k 10 "$RUN_TIMEOUT" env "${CFG_ENV[@]}" valgrind --tool=callgrind -q \
			--callgrind-out-file="$f" "${cmd[@]}" >"$f.log" 2>&1
		rc=$?
		set -e
		if [ "$rc" != 0 ] || [ ! -s "$f" ] || ! "$PYTHON" "$BENCH/summarize.py" callgrind-breakdown \
			"$label" "$f" >"$OUT/callgrind_r1_$name.md"; then
			printf 'callgrind heaptap-r1 %s: status %s (log %s.log)\n' "$name" "$rc" "$f" >>"$FAILS"
			say "FAILED: callgrind heaptap-r1 $name"
		fi
		rm -rf "$d"
	done
}

# ---- accuracy ---------------------------------------------------------------------------------
# bench/accuracy.ts runs its own configurations (one at a time) and writes
# $OUT/accuracy/accuracy.md; it exits 1 when a configuration gave no numbers.
NODE=$ROOT/node_modules/.bin/node
run_accuracy() {
	local rc=0
	local how="npm run bench"
	[ "$MODE" = quick ] && how="npm run bench:quick"
	[ -n "$ONLY" ] && how="bash bench/run.sh$([ "$MODE" = quick ] && echo ' --quick') --only $ONLY"
	"$NODE" "$BENCH/accuracy.ts" --mode "$MODE" --out "$OUT/accuracy" --command "$how" || rc=$?
	if [ "$rc" != 0 ]; then
		printf 'accuracy: status %s; see the Failures in %s/accuracy/accuracy.md\n' "$rc" "$OUT" >>"$FAILS"
		say "FAILED: accuracy (status $rc)"
	fi
}

# ---- machine and tool versions ------------------------------------------------------------
machine_info() {
	local f=$OUT/machine.txt
	{
		echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "mode: $MODE, rounds: $ROUNDS"
		echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
		echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
		echo "kernel: $(uname -sr)"
		echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "glibc: $(ldd --version | head -1 | sed 's/.* //')"
		echo "gcc: $(gcc --version | head -1)"
		echo "python3: $($PYTHON --version 2>&1) ($PYTHON)"
		echo "redis: $(redis-server --version)"
		echo "redis-benchmark: $(redis-benchmark --version 2>/dev/null || dpkg-query -W -f='${Version}' redis-tools)"
		echo "valgrind: $(valgrind --version)"
		echo "heaptrack: $(heaptrack -v 2>/dev/null | tail -1) (Debian $(dpkg-query -W -f='${Version}' heaptrack))"
		echo "jemalloc: Debian libjemalloc2 $(dpkg-query -W -f='${Version}' libjemalloc2); $("$BENCH/build/jeprof_check"); with MALLOC_CONF=prof:true: $(MALLOC_CONF=prof:true,lg_prof_sample:19 "$BENCH/build/jeprof_check")"
		echo "tcmalloc: Debian libgoogle-perftools4 $(dpkg-query -W -f='${Version}' libgoogle-perftools4) ($TCMALLOC)"
		echo "GNU time: Debian time $(dpkg-query -W -f='${Version}' time)"
		echo "node: $("$ROOT/node_modules/.bin/node" --version 2>/dev/null || node --version 2>/dev/null || echo none)"
		echo "heaptap: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" status --porcelain -- preload proto | grep -q . && echo ' + uncommitted changes in preload/ or proto/')"
		echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	} >"$f"
}

# ---- main ---------------------------------------------------------------------------------
say "mode $MODE, $ROUNDS round(s), results in $OUT"
ensure_deps
say "building the preload, the test fixtures and bench/'s helpers"
make -s -C "$ROOT/preload" >"$OUT/build.log" 2>&1 || die "make -C preload failed (see $OUT/build.log)"
make -s -C "$ROOT/test/fixtures" >>"$OUT/build.log" 2>&1 || die "make -C test/fixtures failed (see $OUT/build.log)"
make -s -C "$BENCH" >>"$OUT/build.log" 2>&1 || die "make -C bench failed (see $OUT/build.log)"
if [[ " ${WORKLOADS[*]} " == *" accuracy "* ]]; then
	# accuracy runs `heaptap run` (Node, the addon) and reads profiles with go tool pprof.
	[ -x "$NODE" ] || die "$NODE is missing: run scripts/setup.sh first (npm packages)"
	make -s -C "$ROOT/src/addon" >>"$OUT/build.log" 2>&1 || die "make -C src/addon failed (see $OUT/build.log)"
	command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "go is missing: run scripts/setup-tests.sh first"
fi
"$PYTHON" "$BENCH/gen_c.py" "$GCC_MODULES" "$WORK/gen_big.c"
"$PYTHON" "$BENCH/gen_c.py" "$GCC_SMALL_MODULES" "$WORK/gen_small.c"
echo "gcc input: $(wc -l <"$WORK/gen_big.c") lines ($GCC_MODULES modules); reduced size (massif, tcmalloc heap profiler, heaptrack): $(wc -l <"$WORK/gen_small.c") lines ($GCC_SMALL_MODULES modules)" >"$OUT/sizes.txt"
{
	echo "churn: --threads $CHURN_THREADS --mib $CHURN_MIB --leak-mib $CHURN_LEAK_MIB (reduced: --mib $CHURN_SMALL_MIB)"
	echo "python: $PY_ROUNDS rounds (reduced: $PY_SMALL_ROUNDS)"
	echo "redis: -n $REDIS_N per test (reduced: -n $REDIS_SMALL_N)"
	echo "mallocloop: $LOOP_N pairs; callgrind: $CG_N pairs"
} >>"$OUT/sizes.txt"
machine_info

OVERHEAD=0
for w in "${WORKLOADS[@]}"; do
	if [ "$w" = accuracy ]; then
		say "accuracy: bench/accuracy.ts --mode $MODE"
		run_accuracy
		continue
	fi
	OVERHEAD=1
	if [ "$w" = callgrind ]; then
		say "callgrind: mallocloop $CG_N, without and with heaptap"
		run_callgrind
		continue
	fi
	read -r -a cfgs <<<"$(configs_of "$w")"
	[ ${#cfgs[@]} -gt 0 ] || die "unknown workload $w"
	for ((r = 1; r <= ROUNDS; r++)); do
		say "$w round $r/$ROUNDS: ${cfgs[*]}"
		for c in "${cfgs[@]}"; do
			run_one "$w" "$c" "$r"
		done
	done
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
echo "duration: $(( $(date +%s) - T0 )) s" >>"$OUT/machine.txt"
sumrc=0
if [ "$OVERHEAD" = 1 ]; then
	"$PYTHON" "$BENCH/summarize.py" report "$OUT" "$MODE" >"$OUT/results.md" || sumrc=$?
	if [ "$MODE" = full ] && [ -z "$ONLY" ] && [ "$sumrc" = 0 ]; then
		"$PYTHON" "$BENCH/summarize.py" splice "$OUT/results.md" "$BENCH/RESULTS.md"
		say "bench/RESULTS.md updated (overhead)"
	fi
	cat "$OUT/results.md"
fi
ACC=$OUT/accuracy/accuracy.md
if [ -s "$ACC" ]; then
	if [ "$MODE" = full ] && ! grep -q '^accuracy:' "$FAILS"; then
		"$PYTHON" "$BENCH/summarize.py" splice "$ACC" "$BENCH/RESULTS.md" accuracy
		say "bench/RESULTS.md updated (accuracy)"
	fi
	cat "$ACC"
fi
if [ -s "$FAILS" ] || [ "$sumrc" != 0 ]; then
	say "$(wc -l <"$FAILS") failure(s); results in $OUT/results.md and $ACC"
	cat "$FAILS" >&2
	exit 1
fi
say "done in $(( $(date +%s) - T0 )) s"
