#!/usr/bin/env bash
# Do the tests catch real faults? Applies small faults ("mutants") one at a time to a copy
# of the tree, rebuilds, runs only the tests that should catch each, and prints a table:
# mutant, tests run, caught or survived. The working tree is never changed: the copy is
# made in a temporary directory (tracked and untracked files, as they are now, plus the
# build outputs, so only what a fault touches is rebuilt) and removed on every exit.
#
#   scripts/mutants.sh             every mutant, after a baseline run of the same tests
#   scripts/mutants.sh NAME...     only these mutants
#   scripts/mutants.sh --list      the mutants and their tests
#   --no-baseline                  skip the baseline (the tests passing on the copy unmutated)
#
# Each test command runs under `timeout` (HEAPTAP_MUTANT_TIMEOUT seconds, default 300), so
# a mutant that hangs a test counts as caught and the run stays bounded. A mutant whose
# edit no longer applies (the code moved) or that does not build is reported as such: the
# list must follow the code. Exit 0 when every mutant run was caught, else 1.
# HEAPTAP_MUTANT_LOGS=DIR keeps each mutant's test output in DIR/<mutant>.log.
#
# Needs what the tests need: `npm run build` done in the tree, node_modules installed, and
# the peers (prometheus) scripts/peers/*.sh install.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
limit=${HEAPTAP_MUTANT_TIMEOUT:-300}

# name | file | perl substitution (perl -0pe: the whole file is one string) | tests
# Issue 10 (a hostile neighbour) adds: the reader's SIGBUS guard off, shared-table rows read
# on holes, the agent's quarantine ignored.
# Issue 13 adds: the live filter's counter wrapping (a lost free). Issue 15 adds: std::
# frames taken for sites, the report's site ignoring the list. Issue 10 also adds: a label
# that follows the average size (Alloy matches nothing), Pyroscope's ring-error 422 taken as final, control open
# beyond loopback, a module path taken from the region, a group/other-writable file mode,
# a module file truncated under the symbolizer left unguarded. Issue 13 (session 5) adds:
# posix_memalign's fallback without its alignment check, free() skipping the live filter,
# the agent's re-exec leaving MALLOC_ARENA_MAX for its children, the symbolizer's release
# wait that never grows when builds come back soon after a release, a debug-file candidate
# opened for reading before it is known to be a regular file.
# Issue 14 (safe in every process) adds: a per-thread setup that asks pthread_getattr_np,
# a sample recorded on the thread's own stack, a region made before a sample is taken, a
# half-made region left behind, a glibc symbol no longer pinned to GLIBC_2.2.5.
# Tests, separated by ';':  c:PROGRAM (preload/tests/PROGRAM.c)  sh:SCRIPT  ava:FILE[@MATCH]
MUTANTS=$(cat <<'EOF'
new-thread-first-allocation-always-sampled|preload/core.c|s/if \(rate > 1 && size < t->countdown\) \{/if (0 \&\& rate > 1 \&\& size < t->countdown) {/|c:test_sampler;ava:test/preload/sampling.test.ts
samples-weighted-with-start-up-rate|preload/core.c|s/ht_weight_of\(size, rate\)/ht_weight_of(size, ht_g.cfg.rate)/|c:test_sampler;ava:test/preload/sampling.test.ts
control-rate-acknowledged-not-applied|preload/core.c|s/\t\tst_relaxed\(&ht_g\.rate, want\);\n//|c:test_sampler;ava:test/preload/sampling.test.ts
prometheus-rename-sample-rate|src/agent/metrics.ts|s/'heaptap_sample_rate_bytes'/'heaptap_sampling_rate_bytes'/|ava:test/agent/prometheus.test.ts@*documented name and type*
prometheus-rename-agent-scans|src/agent/metrics.ts|s/'heaptap_agent_scans_total'/'heaptap_agent_scan_count_total'/|ava:test/agent/prometheus.test.ts@*documented name and type*
prometheus-freed-reports-allocated|src/agent/metrics.ts|s/\(p\) => p\.freedBytes\)/(p) => p.allocatedBytes)/|ava:test/agent/prometheus.test.ts@Prometheus scrapes*
otel-rename-freed|src/exporters/otel-metrics.ts|s/freed: 'heaptap\.heap\.freed'/freed: 'heaptap.heap.freed_bytes'/|ava:test/exporters/otel-metrics.test.ts
profile-time-in-microseconds|src/agent/pprof.ts|s/opts\.timeNanos \?\? BigInt\(Date\.now\(\)\) \* 1_000_000n/opts.timeNanos ?? BigInt(Date.now()) * 1_000n/|ava:test/exporters/real-regions.test.ts
max-depth-cut-not-flagged-truncated|preload/core.c|s/(depth = max;)\n\t+truncated = 1;/$1/|ava:test/preload/preload.test.ts@*HEAPTAP_MAX_DEPTH*
stack-bounds-from-pthread_getattr_np|preload/unwind.c|s/\A/#include <pthread.h>\n/; s/(\tif \(!hi\) \{\n\t\tuintptr_t tp = ht_thread_pointer\(\);)/\tif (!hi) { pthread_attr_t a_; if (pthread_getattr_np(pthread_self(), &a_) == 0) pthread_attr_destroy(&a_); }\n$1/|sh:preload/tests/test_safety.sh
sample-on-the-threads-own-stack|preload/core.c|s/\t\tht_call_on_stack\(top, sample, &job\);/\t\tsample(\&job);/|sh:preload/tests/test_safety.sh
region-made-before-a-sample|preload/core.c|s/(\tthread_init\(t\);\n\tuint64_t rate = decide\(t, j->size\);)/\tensure_region();\n$1/|sh:preload/tests/test_safety.sh
half-made-region-left-on-failure|preload/region.c|s/\tint e = errno;\n\tunlink\(tmpname\);/\tint e = errno;/|sh:preload/tests/test_safety.sh
dlsym-pinned-no-more|preload/glibc-pins.h|s/HT_PIN\(dlsym\);\n//|sh:preload/tests/test_library.sh
bad-configuration-changes-exit-code|preload/interpose.c|s/\A/#include <stdio.h>\n/; s/(static void heaptap_fini\(void\)\n\{\n)/$1\tif (ld_relaxed(&ht_g.state) == HT_G_DISABLED) { fflush(NULL); _exit(3); }\n/|sh:preload/tests/test_library.sh
reader-guard-off|src/addon/reader.c|s/\tif \(!guard_ok\)\n\t\treturn fn\(arg\);/\tif (1)\n\t\treturn fn(arg);/|ava:test/agent/hostile.test.ts@*minute*
reader-shared-rows-on-holes-read|src/addon/reader.c|s/if \(!has\(pg, coff, sizeof\(struct ht_counters\)\)\) \{/if (0) {/|ava:test/agent/hostile.test.ts@*sparse*
agent-quarantine-ignored|src/agent/processes.ts|s/if \(\(await fileSig\(known\.path\)\) === known\.quarantine\) continue;/\/\/ quarantine ignored/|ava:test/agent/hostile.test.ts@*quarantined*
live-filter-counter-wraps|preload/live.h|s/\twhile \(v != HT_LIVE_FILTER_STUCK &&\n\t       !__atomic_compare_exchange_n\(c, &v, \(uint16_t\)\(v \+ 1\)/\twhile (!__atomic_compare_exchange_n(c, \&v, (uint16_t)(v + 1)/|c:test_core
sites-std-frames-taken-for-sites|src/sites.ts|s/'\(std\x7c__gnu_cxx\x7c__cxxabiv1\)::\.\*',/'(__gnu_cxx\x7c__cxxabiv1)::.*',/|ava:test/names.test.ts@*C++ cache*
agent-profile-label-drifts|src/addon/encode.cc|s/\t\tLabel\(out, pid_key, 24, pid\);/\t\tLabel(out, pid_key, 24, pid + (uint64_t)(v[0] ? v[1] \/ v[0] : 0));/|ava:test/agent/consumers.test.ts
pyroscope-422-ring-error-final|src/exporters/push.ts|s/\(status === 422 && transient422\(bodyText\)\)/(status === 422 \&\& false)/|ava:test/exporters/delivery.test.ts
control-open-beyond-loopback|src/agent/http.ts|s/if \(!opts\.token && !opts\.loopbackOnly\) \{/if (false) {/|ava:test/agent/auth.test.ts
module-path-from-region-trusted|src/moduleFiles.ts|s/this\.#trust = opts\.trustRegionPath \?\? false;/this.#trust = true;/|ava:test/moduleFiles.test.ts
file-mode-writable-by-others-kept|preload/config.c|s/fv <= 07777 && \(fv & 022\)\)/fv <= 07777 \&\& (fv \& 0))/|sh:preload/tests/test_library.sh
symbolizer-truncated-module-unguarded|src/addon/reader.c|s/if \(zf_depth > 0 && si->si_code == BUS_ADRERR && guard_page_size\)/if (0)/|ava:test/symbolize-truncated.test.ts
posix-memalign-alignment-unchecked|preload/interpose.c|s/(static int posix_memalign_fallback\(void \*\*out, size_t align, size_t n\)\n\{\n)\tif \(align < sizeof\(void \*\) \x7c\x7c \(align & \(align - 1\)\)\)\n\t\treturn EINVAL;\n/$1/|sh:preload/tests/test_library.sh
free-skips-the-live-filter|preload/interpose.c|s/\tHT_LIVE_MAYBE_GOTO\(p, slow\);\n\treal\.free\(p\);/\tif (p == (void *)1) goto slow;\n\treal.free(p);/|ava:test/preload/preload.test.ts@*exactly at rate 1*
agent-malloc-arena-left-in-its-environment|src/cli/agentExec.ts|s/  for \(const name of mark\.split\(','\)\) if \(Object\.hasOwn\(AGENT_ENV, name\)\) delete env\[name\];\n//|ava:test/agent/cli.test.ts@*takes out of its environment*
agent-release-wait-never-grows|src/agent/source.ts|s/Math\.min\(this\.maxMs, this\.delayMs \* 2\)/this.delayMs/|ava:test/agent/release.test.ts
symbolizer-opens-links-before-checking|src/addon/symbolize.cc|s/int pfd = open\(path\.c_str\(\), O_PATH \x7c O_CLOEXEC\);/int pfd = open(path.c_str(), O_RDONLY \x7c O_CLOEXEC \x7c O_NONBLOCK);/|ava:test/symbolize.test.ts@*FIFO or a device*
report-site-ignores-plumbing|src/report/model.ts|s/return Math\.max\(0, siteOfStack\(namesInnermostFirst\)\.index\);/return 0;/|ava:test/report.test.ts
EOF
)

baseline=1
list=0
want=()
for a in "$@"; do
  case $a in
    --no-baseline) baseline=0 ;;
    --list) list=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "mutants.sh: unknown option $a" >&2; exit 2 ;;
    *) want+=("$a") ;;
  esac
done

selected=()
while IFS= read -r line; do
  [ -z "$line" ] && continue
  name=${line%%|*}
  if [ ${#want[@]} -eq 0 ] || printf '%s\n' "${want[@]}" | grep -qxF "$name"; then selected+=("$line"); fi
done <<<"$MUTANTS"
for w in "${want[@]}"; do
  grep -q "^$w|" <<<"$MUTANTS" || { echo "mutants.sh: no mutant named $w (see --list)" >&2; exit 2; }
done
if [ $list = 1 ]; then
  for line in "${selected[@]}"; do IFS='|' read -r name file _ tests <<<"$line"; printf '%-45s %-30s %s\n' "$name" "$file" "$tests"; done
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/heaptap-mutants-XXXXXX")
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
logs=${HEAPTAP_MUTANT_LOGS:-$tmp/logs}
mkdir -p "$logs"

# The pristine copy: sources as they are in the working tree, build outputs, and
# node_modules by links (its .cache, where ava writes, stays in the copy).
base=$tmp/base
mkdir -p "$base"
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$base"
for d in preload/build src/addon/build test/fixtures/build test/fixtures/symfix/build test/agent/build; do
  [ -d "$root/$d" ] && mkdir -p "$base/$(dirname "$d")" && cp -a "$root/$d" "$base/$d"
done
mkdir -p "$base/node_modules"
for e in "$root"/node_modules/* "$root"/node_modules/.bin "$root"/node_modules/.package-lock.json; do
  [ -e "$e" ] && ln -s "$e" "$base/node_modules/$(basename "$e")"
done
if ! (cd "$base" && make -s -C preload all >"$logs/build-base.log" 2>&1 && make -s -C test/fixtures >>"$logs/build-base.log" 2>&1); then
  echo "mutants.sh: the unmutated copy does not build:" >&2
  tail -20 "$logs/build-base.log" >&2
  exit 1
fi

# Runs one test spec in tree $1; its output goes to log $3. Returns the test's status.
run_test() {
  local tree=$1 spec=$2 log=$3
  local kind=${spec%%:*} arg=${spec#*:}
  echo "---- $spec" >>"$log"
  case $kind in
    c) (cd "$tree/preload" && make -s "build/tests/$arg" >>"$log" 2>&1 && timeout -k 10 "$limit" "./build/tests/$arg" >>"$log" 2>&1) ;;
    sh) (cd "$tree" && B=build timeout -k 10 "$limit" bash "$arg" >>"$log" 2>&1) ;;
    ava)
      local file=${arg%%@*} match=
      [ "$file" != "$arg" ] && match=${arg#*@}
      if [ -n "$match" ]; then
        (cd "$tree" && timeout -k 10 "$limit" npx ava "$file" --match "$match" >>"$log" 2>&1)
      else
        (cd "$tree" && timeout -k 10 "$limit" npx ava "$file" >>"$log" 2>&1)
      fi ;;
    *) echo "unknown test kind $kind" >>"$log"; return 99 ;;
  esac
}

# Baseline: every test named below must pass on the unmutated copy, or a "caught" would
# mean nothing.
if [ $baseline = 1 ]; then
  specs=$(for line in "${selected[@]}"; do IFS='|' read -r _ _ _ tests <<<"$line"; tr ';' '\n' <<<"$tests"; done | sort -u)
  failed=0
  while IFS= read -r spec; do
    if ! run_test "$base" "$spec" "$logs/baseline.log"; then
      echo "baseline: $spec FAILS on the unmutated tree" >&2
      failed=1
    fi
  done <<<"$specs"
  if [ $failed = 1 ]; then
    tail -60 "$logs/baseline.log" >&2
    exit 1
  fi
  echo "baseline: $(wc -l <<<"$specs") test commands pass on the unmutated tree"
fi

printf '\n%-45s %-9s %5s  %s\n' mutant result secs tests
printf '%-45s %-9s %5s  %s\n' "------" "------" "----" "-----"
survivors=0
for line in "${selected[@]}"; do
  IFS='|' read -r name file expr tests <<<"$line"
  m=$tmp/m
  rm -rf "$m"
  cp -a "$base" "$m"
  log=$logs/$name.log
  start=$(date +%s)
  perl -0pi -e "$expr" "$m/$file" 2>>"$log"
  if cmp -s "$base/$file" "$m/$file"; then
    result="NOT-APPLIED"
  elif ! (cd "$m" && make -s -C preload all >>"$log" 2>&1 && make -s -C src/addon >>"$log" 2>&1); then
    result="NO-BUILD"
  else
    result=survived
    IFS=';' read -ra specs <<<"$tests"
    shown=
    for spec in "${specs[@]}"; do
      # Every listed test runs; the table says which of them failed (caught it).
      if run_test "$m" "$spec" "$log"; then shown+="$spec (passed) "; else result=caught; shown+="$spec (FAILED) "; fi
    done
  fi
  [ "$result" = caught ] || survivors=$((survivors + 1))
  printf '%-45s %-9s %5s  %s\n' "$name" "$result" "$(( $(date +%s) - start ))" "${shown:-${tests//;/ }}"
  if [ "$result" != caught ] && [ -n "${HEAPTAP_MUTANT_SHOW:-}" ]; then tail -40 "$log"; fi
  rm -rf "$m"
done
echo
echo "mutants: $(( ${#selected[@]} - survivors )) caught, $survivors not caught (survived, not applied or not built)"
[ $survivors = 0 ]
