// How right heaptap's figures are, against exact ones.
//
//   node bench/accuracy.ts --mode full|quick --out DIR [--only churn,real,peak]
//                          [--command 'how it was started', for the section's first line]
//
// bench/run.sh runs it in both modes (npm run bench, npm run bench:quick); it writes
// DIR/accuracy.md (the "## Accuracy" section of bench/RESULTS.md, which run.sh splices in
// after a complete full run), DIR/accuracy.json (every figure) and DIR/logs/. It exits 1
// when any configuration did not run or did not give its numbers, never on what the
// numbers are. Needs what run.sh installs (heaptrack, valgrind, jemalloc's jeprof,
// gperftools' google-pprof and libtcmalloc, redis) and a built preload, addon and fixtures.
//
// Three parts:
//   churn  test/fixtures/build/churn writes its exact per-site truth (--truth): bytes
//          allocated and in use at exit per site, against heaptap at the default rate
//          (several HEAPTAP_SEEDs, so the spread shows), heaptap at rate 1, jemalloc's
//          profiler at the same mean rate (several runs: it cannot be seeded), tcmalloc's
//          heap profiler (reduced size: it is 50-300x slower) and heaptrack.
//   real   gcc (cc1 only), python3 (PYTHONMALLOC=malloc) and redis-server: heaptap's top
//          10 sites by bytes allocated against heaptrack's exact per-site totals (rank
//          agreement, relative error), with heaptap at rate 1 beside it to tell sampling
//          error from attribution.
//   peak   heaptap's peak (the library keeps it; `heaptap run` prints it and writes the
//          stacks at it) against massif's peak snapshot (--peak-inaccuracy=0: the exact
//          peak) on a 1 ms spike, python, gcc (cc1) and sqlite3, at the default rate and 1.
//
// Every profiler's output goes through bench/accuracy-read.ts, which applies one rule to
// find an allocation's site (the innermost named frame that is not an allocator function).
// Runs are one at a time; nothing here is timed, so other work on the machine does not
// change the figures.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { constants as osConstants, cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';

import { findGo } from '../test/helpers/heaptap.ts';
import { NO_SITE, readCollapsed, readHeaptrack, readPprof, readMassifPeak, totalOf, type Sites } from './accuracy-read.ts';

const ROOT = resolve(import.meta.dirname, '..');
const BENCH = join(ROOT, 'bench');
const CHURN = join(ROOT, 'test/fixtures/build/churn');
const CLI = join(ROOT, 'src/cli.ts');
const NODE = process.execPath;
const PYTHON = '/usr/bin/python3'; // Debian's, not a pyenv shim (no exec chain)
const LIBDIR = '/usr/lib/x86_64-linux-gnu';
const JEMALLOC = `${LIBDIR}/libjemalloc.so.2`;
const TCMALLOC = `${LIBDIR}/libtcmalloc.so.4`;
const RATE = 512 * 1024; // heaptap's default mean sampling interval, and lg_prof_sample:19
const PY_ENV = { PYTHONMALLOC: 'malloc', PYTHONHASHSEED: '0' }; // every object through malloc; same dict order each run

// ---- arguments and sizes ---------------------------------------------------------------------

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}
const MODE = arg('--mode') ?? 'quick';
if (MODE !== 'quick' && MODE !== 'full') throw new Error(`--mode must be quick or full, not ${MODE}`);
const OUT = resolve(arg('--out') ?? join(BENCH, 'out', MODE, 'accuracy'));
const ONLY = new Set((arg('--only') ?? 'churn,real,peak').split(','));
const COMMAND = arg('--command') ?? `node bench/accuracy.ts --mode ${MODE}`;

// Full sizes: churn's sites allocate 512 MiB each (1024 expected samples at the default
// rate: an sd of at most 3.1%); the real workloads at the sizes of bench/run.sh's overhead
// runs (gcc at its reduced size, where heaptrack copes). Quick sizes only check that every
// configuration runs and gives its numbers, in well under a minute.
const SIZES = MODE === 'full'
  ? {
      churn: ['--threads', '2', '--mib', '256', '--leak-mib', '64'],
      churnTcmalloc: ['--threads', '2', '--mib', '48', '--leak-mib', '16'],
      seeds: 10, jemallocRuns: 10,
      gccModules: 60, pyRounds: 400, redisN: 60000,
      peakSpikeMib: 200, peakPyRounds: 20, peakGccModules: 60, peakSqliteRows: 200000, peakSeeds: 10,
      timeoutMs: 1800_000,
    }
  : {
      churn: ['--threads', '2', '--mib', '16', '--leak-mib', '8'],
      churnTcmalloc: ['--threads', '2', '--mib', '2', '--leak-mib', '1'],
      seeds: 3, jemallocRuns: 3,
      gccModules: 4, pyRounds: 6, redisN: 500,
      peakSpikeMib: 16, peakPyRounds: 2, peakGccModules: 4, peakSqliteRows: 2000, peakSeeds: 3,
      timeoutMs: 300_000,
    };

// ---- running things --------------------------------------------------------------------------

const failures: string[] = [];
const commands: Array<[string, string]> = [];
const LOGS = join(OUT, 'logs');
const RUNS = join(OUT, 'runs');

/** A command as one shell-like line, with this run's paths replaced by names. */
function showCmd(cmd: string[], env: Record<string, string> = {}): string {
  const q = (s: string) => (/^[\w@%+=:,./$-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  const words = [...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...cmd];
  const line = (Object.keys(env).length ? 'env ' : '') + words.map(q).join(' ');
  return line.split(NODE).join('node').split(RUNS).join('$DIR').split(ROOT).join('.');
}

/** Starts a command in its own process group (a timeout kills what it started too), with
 * stdout and stderr to LOGS/<name>.log. Resolves with the exit status (128+signal). */
function start(name: string, cmd: string[], env: Record<string, string> = {}, cwd = ROOT): Promise<number> {
  const log = createWriteStream(join(LOGS, `${name}.log`), { flags: 'a' });
  const child = spawn(cmd[0]!, cmd.slice(1), {
    cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const timer = setTimeout(() => {
    log.write(`\naccuracy: timed out after ${SIZES.timeoutMs / 1000} s\n`);
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
  }, SIZES.timeoutMs);
  return new Promise<number>((res) => {
    child.on('error', (e) => { log.write(`accuracy: ${e.message}\n`); res(127); });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      log.end();
      res(code ?? 128 + (sig ? osConstants.signals[sig] : 0));
    });
  });
}

/** Runs a command to the end; throws with the log's name when it fails. */
async function run(name: string, cmd: string[], env: Record<string, string> = {}, cwd = ROOT): Promise<void> {
  const rc = await start(name, cmd, env, cwd);
  if (rc !== 0) throw new Error(`exit status ${rc} (log: ${join(LOGS, name + '.log')})`);
}

/** Captures a command's stdout (jeprof's profiles, tool versions). */
async function output(name: string, cmd: string[]): Promise<string> {
  const child = spawn(cmd[0]!, cmd.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const rc = await new Promise<number | null>((res) => child.on('close', res));
  if (rc !== 0) {
    writeFileSync(join(LOGS, `${name}.log`), err);
    throw new Error(`${cmd[0]} exit status ${rc} (log: ${join(LOGS, name + '.log')})`);
  }
  return out;
}

/** A fresh directory for one run's profiles. */
function runDir(name: string): string {
  const d = join(RUNS, name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true });
  return d;
}

function onlyFile(dir: string, re: RegExp, what: string): string {
  const names = readdirSync(dir).filter((n) => re.test(n)).sort();
  if (!names.length) throw new Error(`left no ${what} in ${dir}`);
  return join(dir, names[names.length - 1]!); // the last: tcmalloc's final dump, at exit
}

/** Runs one measurement; a failure is recorded (the others go on) and yields undefined. */
async function attempt<T>(what: string, f: () => Promise<T>): Promise<T | undefined> {
  process.stderr.write(`accuracy: ${what}\n`);
  try {
    return await f();
  } catch (e) {
    const msg = `${what}: ${(e as Error).message}`;
    failures.push(msg);
    process.stderr.write(`accuracy: FAILED ${msg}\n`);
    return undefined;
  }
}

// The profilers, each a way to run a command and read back per-site totals.
interface HeaptapOpts { rate?: number; seed: number; interval?: string }

/** `heaptap run` (the CLI a user runs): the heap profile (all allocations, in use at exit)
 * and the peak profile. */
function heaptapCmd(dir: string, o: HeaptapOpts): { cmd: string[]; env: Record<string, string> } {
  const cmd = [NODE, CLI, 'run', '-o', dir];
  if (o.rate) cmd.push('--rate', String(o.rate));
  if (o.interval) cmd.push('--interval', o.interval);
  return { cmd: [...cmd, '--'], env: { HEAPTAP_SEED: String(o.seed) } };
}
async function heaptapProfiles(dir: string): Promise<{ heap: Sites; peak: Sites }> {
  return {
    heap: await readPprof(onlyFile(dir, /^heaptap\.\d+\.heap\.pb\.gz$/, 'heap profile')),
    peak: await readPprof(onlyFile(dir, /^heaptap\.\d+\.peak\.pb\.gz$/, 'peak profile')),
  };
}

async function heaptap(name: string, prog: string[], o: HeaptapOpts, env: Record<string, string> = {}) {
  const dir = runDir(name);
  const h = heaptapCmd(dir, o);
  const e = { ...env, ...h.env };
  recordCmd(name, [...h.cmd, ...prog], e);
  await run(name, [...h.cmd, ...prog], e);
  return { dir, ...(await heaptapProfiles(dir)) };
}

// heaptrack's interpreter can grow without bound (bench/run.sh: gcc at its full size): cap
// its address space, so that a blow-up fails the run and not the machine.
const HEAPTRACK = ['prlimit', `--as=${8 * 2 ** 30}`, '--', 'heaptrack'];

async function heaptrack(name: string, prog: string[], env: Record<string, string> = {}) {
  const dir = runDir(name);
  const cmd = [...HEAPTRACK, '-o', join(dir, 'ht'), ...prog];
  recordCmd(name, cmd, env);
  await run(name, cmd, env);
  return { dir, ...(await readHeaptrack(onlyFile(dir, /^ht.*\.zst$/, 'heaptrack trace'))) };
}

const recorded = new Set<string>();
/** Keeps one command per configuration (the first seed stands for the others). */
function recordCmd(name: string, cmd: string[], env: Record<string, string>): void {
  const key = name.replace(/-seed\d+|-run\d+/, '');
  if (recorded.has(key)) return;
  recorded.add(key);
  commands.push([key, showCmd(cmd, env)]);
}

// ---- statistics --------------------------------------------------------------------------------

const rel = (got: number, want: number) => (want ? got / want - 1 : got ? Infinity : 0);
const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
const sd = (v: number[]) => (v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean(v)) ** 2, 0) / (v.length - 1)) : 0);
const worst = (v: number[]) => v.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a), 0);

/** Ranks (1 = largest), ties averaged. */
function ranks(values: number[]): number[] {
  const order = values.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]);
  const r = new Array<number>(values.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    for (let k = i; k <= j; k++) r[order[k]![1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

/** Spearman's rho: the Pearson correlation of the two rankings. */
function spearman(a: number[], b: number[]): number {
  const ra = ranks(a), rb = ranks(b);
  const ma = mean(ra), mb = mean(rb);
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i]! - ma) * (rb[i]! - mb);
    da += (ra[i]! - ma) ** 2;
    db += (rb[i]! - mb) ** 2;
  }
  return da && db ? num / Math.sqrt(da * db) : NaN;
}

function topSites(s: Sites, n: number, key: 'allocBytes' | 'inuseBytes' = 'allocBytes'): string[] {
  return [...s].filter(([k, v]) => k !== NO_SITE && (v[key] ?? 0) > 0)
    .sort((a, b) => (b[1][key] ?? 0) - (a[1][key] ?? 0)).slice(0, n).map(([k]) => k);
}

// ---- formatting ------------------------------------------------------------------------------

const pct = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)}%` : 'n/a');
const mib = (b: number) => (b >= 1 << 20 ? (b / (1 << 20)).toFixed(b >= 100 << 20 ? 0 : 1) + ' MiB' : (b / 1024).toFixed(b >= 10 << 10 ? 0 : 1) + ' KiB');
const spread = (v: number[]) => (v.length ? `${pct(mean(v))} ± ${(sd(v) * 100).toFixed(1)}% [${pct(worst(v))}]` : 'n/a');
const table = (head: string[], align: string[], rows: string[][]) =>
  [`| ${head.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');

// ---- part 1: churn against its truth ---------------------------------------------------------

interface Truth { sites: Record<string, { alloc_bytes: number; alloc_objects: number; inuse_bytes: number }> }
const readTruth = (f: string): Truth => JSON.parse(readFileSync(f, 'utf8')) as Truth;

/** One churn run under a profiler: the run's truth and the profiler's per-site figures
 * (allocated, and in use at exit where it reports them). */
interface ChurnRun { truth: Truth; alloc: Map<string, number>; inuse?: Map<string, number> }
const allocOf = (s: Sites) => new Map([...s].map(([k, v]) => [k, v.allocBytes]));
const inuseOf = (s: Sites) => new Map([...s].map(([k, v]) => [k, v.inuseBytes ?? 0]));

async function churnPart(results: Record<string, unknown>): Promise<string> {
  const C = SIZES.churn;
  const configs: Record<string, ChurnRun[]> = {};
  const put = (c: string, r: ChurnRun | undefined) => r && (configs[c] ??= []).push(r);
  const churnCmd = (dir: string, size = C) => [CHURN, ...size, '--seed', '1', '--truth', join(dir, 'truth.json')];

  for (let seed = 1; seed <= SIZES.seeds; seed++) {
    put('heaptap', await attempt(`churn: heaptap, default rate, HEAPTAP_SEED=${seed}`, async () => {
      const name = `churn-heaptap-seed${seed}`;
      const dir = join(RUNS, name);
      const r = await heaptap(name, churnCmd(dir), { seed });
      return { truth: readTruth(join(dir, 'truth.json')), alloc: allocOf(r.heap), inuse: inuseOf(r.heap) };
    }));
  }
  put('heaptap-r1', await attempt('churn: heaptap, rate 1', async () => {
    const dir = join(RUNS, 'churn-heaptap-r1');
    const r = await heaptap('churn-heaptap-r1', churnCmd(dir), { seed: 1, rate: 1 });
    return { truth: readTruth(join(dir, 'truth.json')), alloc: allocOf(r.heap), inuse: inuseOf(r.heap) };
  }));
  for (let i = 1; i <= SIZES.jemallocRuns; i++) {
    put('jemalloc', await attempt(`churn: jemalloc prof (lg_prof_sample:19), run ${i}`, async () => {
      const name = `churn-jemalloc-run${i}`;
      const dir = runDir(name);
      // prof_accum: the dump then also holds everything allocated, not only what is in use.
      const env = { LD_PRELOAD: JEMALLOC, MALLOC_CONF: `prof:true,prof_accum:true,lg_prof_sample:19,prof_final:true,prof_prefix:${dir}/jeprof` };
      const cmd = churnCmd(dir);
      recordCmd(name, cmd, env);
      await run(name, cmd, env);
      const f = onlyFile(dir, /^jeprof\..*\.heap$/, 'jemalloc heap profile');
      recordCmd('churn-jeprof', ['jeprof', '--collapsed', '--alloc_space', CHURN, f.replace(/jeprof\.\d+/, 'jeprof.PID')], {});
      return {
        truth: readTruth(join(dir, 'truth.json')),
        alloc: readCollapsed(await output(name + '-jeprof', ['jeprof', '--collapsed', '--alloc_space', CHURN, f])),
        inuse: readCollapsed(await output(name + '-jeprof', ['jeprof', '--collapsed', '--inuse_space', CHURN, f])),
      };
    }));
  }
  put('tcmalloc', await attempt('churn: tcmalloc heap profiler (reduced size)', async () => {
    const name = 'churn-tcmalloc';
    const dir = runDir(name);
    const env = { LD_PRELOAD: TCMALLOC, HEAPPROFILE: `${dir}/tc` };
    const cmd = churnCmd(dir, SIZES.churnTcmalloc);
    recordCmd(name, cmd, env);
    await run(name, cmd, env);
    // The last dump is the one written at exit.
    const f = onlyFile(dir, /^tc\.\d+\.heap$/, 'tcmalloc heap profile');
    const pb = join(dir, 'tc.pb.gz');
    recordCmd('churn-tcmalloc-pprof', ['go', 'tool', 'pprof', '-proto', `-output=${pb}`, CHURN, f.replace(/tc\.\d+/, 'tc.NNNN')], {});
    await run(name + '-pprof', [findGo(), 'tool', 'pprof', '-proto', `-output=${pb}`, CHURN, f]);
    const sites = await readPprof(pb);
    return { truth: readTruth(join(dir, 'truth.json')), alloc: allocOf(sites), inuse: inuseOf(sites) };
  }));
  put('heaptrack', await attempt('churn: heaptrack', async () => {
    const dir = join(RUNS, 'churn-heaptrack');
    const r = await heaptrack('churn-heaptrack', churnCmd(dir));
    return { truth: readTruth(join(dir, 'truth.json')), alloc: allocOf(r.sites), inuse: inuseOf(r.sites) };
  }));

  // Every configuration must give a figure for every site (a sampling profiler at these
  // sizes misses a site with a probability below e^-16).
  const order = ['heaptap', 'heaptap-r1', 'jemalloc', 'tcmalloc', 'heaptrack'];
  const truth0 = configs['heaptap-r1']?.[0]?.truth ?? Object.values(configs)[0]?.[0]?.truth;
  if (!truth0) return '(no churn run gave numbers)';
  const siteNames = Object.keys(truth0.sites);
  for (const c of order) {
    for (const r of configs[c] ?? []) {
      const missing = siteNames.filter((s) => !(r.alloc.get(s) ?? 0));
      if (missing.length) failures.push(`churn: ${c} gave no figure for ${missing.join(', ')}`);
    }
  }
  const errs = (c: string, s: string) => (configs[c] ?? []).map((r) => rel(r.alloc.get(s) ?? 0, r.truth.sites[s]!.alloc_bytes));
  const sum = (m: Map<string, number>) => siteNames.reduce((a, s) => a + (m.get(s) ?? 0), 0);
  const sumTruth = (t: Truth) => siteNames.reduce((a, s) => a + t.sites[s]!.alloc_bytes, 0);
  const allErrs = (c: string) => (configs[c] ?? []).map((r) => rel(sum(r.alloc), sumTruth(r.truth)));
  const one = (v: number[]) => (v.length ? pct(v[0]!) : 'FAILED');
  const rows = siteNames.map((s) => {
    const b = truth0.sites[s]!.alloc_bytes;
    return [s, mib(b), `${(100 * Math.sqrt(RATE / b)).toFixed(1)}%`, one(errs('heaptap', s)), spread(errs('heaptap', s)),
      one(errs('heaptap-r1', s)), spread(errs('jemalloc', s)), one(errs('tcmalloc', s)), one(errs('heaptrack', s))];
  });
  rows.push(['all sites', mib(sumTruth(truth0)), `${(100 * Math.sqrt(RATE / sumTruth(truth0))).toFixed(1)}%`,
    one(allErrs('heaptap')), spread(allErrs('heaptap')), one(allErrs('heaptap-r1')), spread(allErrs('jemalloc')),
    one(allErrs('tcmalloc')), one(allErrs('heaptrack'))]);

  // In use at exit: only site_leak holds memory then; every other site should be 0.
  const leak = 'site_leak';
  const inuseErr = (c: string) => (configs[c] ?? []).filter((r) => r.inuse).map((r) => rel(r.inuse!.get(leak) ?? 0, r.truth.sites[leak]!.inuse_bytes));
  const elsewhere = (c: string) => (configs[c] ?? []).filter((r) => r.inuse).map((r) => siteNames.filter((s) => s !== leak).reduce((a, s) => a + (r.inuse!.get(s) ?? 0), 0));
  const inuseRows = [
    ['site_leak: relative error', ...order.map((c) => (configs[c]?.length ?? 0) > 1 ? spread(inuseErr(c)) : one(inuseErr(c)))],
    ['other sites: bytes reported (truth 0)', ...order.map((c) => { const v = elsewhere(c); return v.length ? v.map((x) => String(Math.round(x))).join(', ') : 'FAILED'; })],
  ];

  results.churn = {
    sites: siteNames,
    truth: truth0.sites,
    configs: Object.fromEntries(Object.entries(configs).map(([c, runs]) => [c, runs.map((r) => ({
      alloc: Object.fromEntries(siteNames.map((s) => [s, r.alloc.get(s) ?? 0])),
      inuse: r.inuse ? Object.fromEntries(siteNames.map((s) => [s, r.inuse!.get(s) ?? 0])) : undefined,
      truth: Object.fromEntries(siteNames.map((s) => [s, r.truth.sites[s]])),
    }))])),
  };

  const reduced = SIZES.churnTcmalloc.join(' ');
  return [
    `### Per-site bytes allocated on churn, against its exact truth`,
    '',
    `\`churn ${C.join(' ')} --seed 1\` (tcmalloc's heap profiler: \`${reduced}\`, against that run's own truth). ` +
    `Each cell is the relative error of the profiler's bytes allocated for the site. ` +
    `"sd bound" is √(R/B) for R = 512 KiB and B the site's bytes: the relative standard deviation ` +
    `of a byte-sampled estimate when every object is much smaller than R, and an upper bound for ` +
    `larger ones. Spreads are mean ± sd [worst] over ${SIZES.seeds} heaptap seeds (HEAPTAP_SEED=1..${SIZES.seeds}) ` +
    `and ${SIZES.jemallocRuns} jemalloc runs (its sampler cannot be seeded).`,
    '',
    table(['site', 'truth', 'sd bound', 'heaptap, seed 1', `heaptap, ${SIZES.seeds} seeds`, 'heaptap rate 1',
      `jemalloc prof, ${SIZES.jemallocRuns} runs`, 'tcmalloc HEAPPROFILE', 'heaptrack'],
    ['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:'], rows),
    '',
    'In use at exit (only site_leak still holds memory; each thread frees its working set before it ends):',
    '',
    table(['', `heaptap (${SIZES.seeds} seeds)`, 'heaptap rate 1', `jemalloc prof (${SIZES.jemallocRuns} runs)`, 'tcmalloc HEAPPROFILE', 'heaptrack'],
      ['---', '---:', '---:', '---:', '---:', '---:'], inuseRows),
    note('accuracy-churn'),
  ].join('\n');
}

// ---- part 2: real workloads against heaptrack -----------------------------------------------

interface Workload {
  name: string;
  title: string;
  /** runs the workload under a profiler command prefix (heaptap run ... -- or heaptrack ...) */
  run(name: string, prefix: string[], env: Record<string, string>, dir: string): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function workloads(): Workload[] {
  const gcc: Workload = {
    name: 'gcc',
    title: `gcc -O2 -c on a generated C file (${SIZES.gccModules} modules; cc1 only)`,
    async run(name, prefix, env, dir) {
      const src = join(RUNS, 'gen.c');
      if (!existsSync(src)) {
        const gen = [PYTHON, join(BENCH, 'gen_c.py'), String(SIZES.gccModules), src];
        recordCmd('gcc input', gen, {});
        await run('gen_c', gen);
      }
      // gcc runs cc1 through the wrapper, which runs only cc1 under the profiler.
      const e = { ...env, BENCH_CC1_PROFILER: prefix.join(' ') };
      const cmd = ['gcc', '-O2', '-c', src, '-o', join(dir, 'out.o'), '-wrapper', join(BENCH, 'accuracy-wrap.sh')];
      recordCmd(name, cmd, e);
      await run(name, cmd, e);
    },
  };
  const python: Workload = {
    name: 'python',
    title: `python3 bench/pychurn.py ${SIZES.pyRounds} (PYTHONMALLOC=malloc)`,
    async run(name, prefix, env) {
      const cmd = [...prefix, PYTHON, '-s', join(BENCH, 'pychurn.py'), String(SIZES.pyRounds)];
      const e = { ...env, ...PY_ENV };
      recordCmd(name, cmd, e);
      await run(name, cmd, e);
    },
  };
  const redis: Workload = {
    name: 'redis',
    title: `redis-server under redis-benchmark -n ${SIZES.redisN}`,
    async run(name, prefix, env, dir) {
      const port = String(await freePort());
      const server = [...prefix, 'redis-server', '--port', port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
        '--dir', dir, '--logfile', join(dir, 'redis.log')];
      const client = ['redis-benchmark', '-h', '127.0.0.1', '-p', port, '-n', String(SIZES.redisN), '-c', '20', '-P', '8',
        '-r', '100000', '-d', '64', '-t', 'set,get,lpush,lpop,sadd,hset,lrange_100', '--csv'];
      const shown = (c: string[]) => c.map((x) => (x === port ? '$PORT' : x));
      recordCmd(name, shown(server), env);
      recordCmd('redis-benchmark (the client of every redis run)', shown(client), {});
      const p = start(name, server, env);
      let up = false;
      for (let i = 0; i < 600 && !up; i++) {
        up = await run(`${name}-ping`, ['redis-cli', '-p', port, 'ping']).then(() => true, () => false);
        if (!up) await sleep(100);
      }
      try {
        if (!up) throw new Error(`redis-server did not answer on port ${port} (log: ${join(LOGS, name + '.log')})`);
        await run(`${name}-client`, client);
      } finally {
        await run(`${name}-shutdown`, ['redis-cli', '-p', port, 'shutdown', 'nosave']).catch(() => {});
        const rc = await p;
        if (rc !== 0 && up) throw new Error(`exit status ${rc} (log: ${join(LOGS, name + '.log')})`);
      }
    },
  };
  return [gcc, python, redis];
}

async function realPart(results: Record<string, unknown>): Promise<string> {
  const parts: string[] = [
    '### Real workloads: heaptap\'s top 10 sites against heaptrack\'s exact totals',
    '',
    'heaptrack records every allocation; its per-site bytes allocated are summed from its trace ' +
    '(heaptrack_print has no such cost). heaptap runs at the default rate with HEAPTAP_SEED=1, and at ' +
    'rate 1 beside it: rate 1 against heaptrack tells attribution and run-to-run differences apart ' +
    'from sampling error. Each profiler profiles its own run of the program. "in heaptrack\'s top 10" ' +
    'counts how many of heaptap\'s top 10 sites are also in heaptrack\'s; Spearman\'s ρ compares the ' +
    'two rankings over the union of both top 10s (a site one of them lacks counts as 0 there).',
  ];
  const summary: string[][] = [];
  const out: Record<string, unknown> = {};
  for (const w of workloads()) {
    const got = await attempt(`${w.name}: heaptap default rate, heaptap rate 1, heaptrack`, async () => {
      const r: Record<string, Sites> = {};
      for (const [c, o] of [['heaptap', { seed: 1 }], ['heaptap-r1', { seed: 1, rate: 1 }]] as const) {
        const name = `${w.name}-${c}`;
        const dir = runDir(name);
        const h = heaptapCmd(dir, o);
        await w.run(name, h.cmd, h.env, dir);
        r[c] = (await heaptapProfiles(dir)).heap;
      }
      const name = `${w.name}-heaptrack`;
      const dir = runDir(name);
      await w.run(name, [...HEAPTRACK, '-o', join(dir, 'ht')], {}, dir);
      r.heaptrack = (await readHeaptrack(onlyFile(dir, /^ht.*\.zst$/, 'heaptrack trace'))).sites;
      for (const [c, s] of Object.entries(r)) if (!topSites(s, 10).length) throw new Error(`${c} gave no sites`);
      return r;
    });
    if (!got) {
      summary.push([w.name, 'FAILED', '', '', '', '', '']);
      continue;
    }
    const exact = got.heaptrack!;
    const agree = (s: Sites) => {
      const a = topSites(s, 10), b = topSites(exact, 10);
      const union = [...new Set([...a, ...b])];
      return {
        overlap: a.filter((x) => b.includes(x)).length,
        rho: spearman(union.map((x) => s.get(x)?.allocBytes ?? 0), union.map((x) => exact.get(x)?.allocBytes ?? 0)),
        union: union.length,
      };
    };
    const d = agree(got.heaptap!), d1 = agree(got['heaptap-r1']!);
    // Mean absolute error over heaptap's top 10 sites that heaptrack saw at all.
    const errs = topSites(got.heaptap!, 10).filter((s) => exact.get(s)?.allocBytes)
      .map((s) => Math.abs(rel(got.heaptap!.get(s)!.allocBytes, exact.get(s)!.allocBytes)));
    const tot = (s: Sites) => totalOf(s, 'allocBytes');
    summary.push([w.name, mib(tot(exact)), `${d.overlap}/10`, d.rho.toFixed(3), errs.length ? `${(100 * mean(errs)).toFixed(1)}%` : 'n/a',
      pct(rel(tot(got.heaptap!), tot(exact))), `${d1.overlap}/10, ρ ${d1.rho.toFixed(3)}`]);
    const exactRank = new Map(topSites(exact, Infinity).map((s, i) => [s, i + 1]));
    const rows = topSites(got.heaptap!, 10).map((s, i) => {
      const want = exact.get(s)?.allocBytes ?? 0;
      return [String(i + 1), '`' + s + '`', want ? `${mib(want)} (#${exactRank.get(s)})` : 'not seen',
        want ? `${(100 * Math.sqrt(RATE / want)).toFixed(1)}%` : '', mib(got.heaptap!.get(s)!.allocBytes),
        pct(rel(got.heaptap!.get(s)!.allocBytes, want)), pct(rel(got['heaptap-r1']!.get(s)?.allocBytes ?? 0, want))];
    });
    const mine = topSites(got.heaptap!, 10);
    const htRank = new Map(topSites(got.heaptap!, Infinity).map((s, i) => [s, i + 1]));
    const missed = topSites(exact, 10).filter((s) => !mine.includes(s))
      .map((s) => `\`${s}\` (heaptrack #${exactRank.get(s)}, ${mib(exact.get(s)!.allocBytes)}; heaptap ${htRank.has(s) ? '#' + htRank.get(s) : 'none'})`);
    out[w.name] = Object.fromEntries(Object.entries(got).map(([c, s]) => [c, Object.fromEntries(
      topSites(s, 30).map((k) => [k, s.get(k)!.allocBytes]))]));
    parts.push('', `#### ${w.title}`, '',
      `heaptap's top 10 by bytes allocated; heaptrack's bytes for the same site (its rank in heaptrack); ` +
      `the sd bound √(R/B) for heaptrack's B; the relative error of heaptap at the default rate and at rate 1 ` +
      `against heaptrack.`, '',
      table(['#', 'site', 'heaptrack (rank)', 'sd bound', 'heaptap', 'heaptap error', 'heaptap rate 1 error'],
        ['---:', '---', '---:', '---:', '---:', '---:', '---:'], rows),
      '', missed.length ? `In heaptrack's top 10, not in heaptap's: ${missed.join('; ')}.` : 'heaptap\'s top 10 are heaptrack\'s top 10.');
  }
  results.real = out;
  parts.splice(3, 0, '', table(['workload', 'heaptrack: bytes allocated', 'in heaptrack\'s top 10', 'Spearman ρ',
    'mean abs. error, top 10', 'total error', 'heaptap rate 1: top 10, ρ'],
  ['---', '---:', '---:', '---:', '---:', '---:', '---:'], summary));
  parts.push(note('accuracy-real'));
  return parts.join('\n');
}

// ---- part 3: peak in use against massif -----------------------------------------------------

/** A program of the peak part: its command under a profiler prefix (heaptap run ... --, or
 * valgrind --tool=massif ...). gcc runs cc1 alone under it, as the real part does. */
interface PeakProg {
  name: string;
  title: string;
  cmd(prefix: string[], dir: string): Promise<{ cmd: string[]; env: Record<string, string> }>;
}

function peakProgs(): PeakProg[] {
  const spike = join(ROOT, 'test/fixtures/build/spike');
  return [
    {
      name: 'spike', title: `spike --mib ${SIZES.peakSpikeMib} (a spike held 1 ms, test/fixtures/spike.c)`,
      cmd: async (prefix) => ({ cmd: [...prefix, spike, '--mib', String(SIZES.peakSpikeMib), '--hold-us', '1000'], env: {} }),
    },
    {
      name: 'python', title: `python3 bench/pychurn.py ${SIZES.peakPyRounds} (PYTHONMALLOC=malloc)`,
      cmd: async (prefix) => ({ cmd: [...prefix, PYTHON, '-s', join(BENCH, 'pychurn.py'), String(SIZES.peakPyRounds)], env: PY_ENV }),
    },
    {
      name: 'gcc', title: `gcc -O2 -c on a generated C file (${SIZES.peakGccModules} modules; cc1 only)`,
      async cmd(prefix, dir) {
        const src = join(RUNS, `peak-gen-${SIZES.peakGccModules}.c`);
        if (!existsSync(src)) {
          const gen = [PYTHON, join(BENCH, 'gen_c.py'), String(SIZES.peakGccModules), src];
          recordCmd('peak gcc input', gen, {});
          await run('peak-gen_c', gen);
        }
        return {
          cmd: ['gcc', '-O2', '-c', src, '-o', join(dir, 'out.o'), '-wrapper', join(BENCH, 'accuracy-wrap.sh')],
          env: { BENCH_CC1_PROFILER: prefix.join(' ') },
        };
      },
    },
    {
      name: 'sqlite', title: `sqlite3 :memory: < bench/sqlite-peak.sql (${SIZES.peakSqliteRows} rows, an index, a sort)`,
      async cmd(prefix, dir) {
        const sql = join(dir, 'peak.sql');
        writeFileSync(sql, readFileSync(join(BENCH, 'sqlite-peak.sql'), 'utf8').replaceAll('$ROWS', String(SIZES.peakSqliteRows)));
        return { cmd: [...prefix, 'sqlite3', ':memory:', '-init', sql, '.quit'], env: {} };
      },
    },
  ];
}

/** The run's peak `heaptap run` printed (its exact byte count) in the run's log. */
function summaryPeak(name: string): number {
  const log = readFileSync(join(LOGS, `${name}.log`), 'utf8');
  const m = /^ {2}peak in use +\S+ \S+ \(([\d,]+) bytes\)/m.exec(log);
  if (!m) throw new Error(`no peak line in ${join(LOGS, name + '.log')}`);
  return Number(m[1]!.replaceAll(',', ''));
}

async function peakPart(results: Record<string, unknown>): Promise<string> {
  const parts: string[] = [
    '### Peak in use: heaptap\'s peak against massif\'s peak snapshot',
    '',
    'The heaptap library keeps the peak where it happens: at every sampled allocation and free it ' +
    'updates its in-use estimate and, at a new high, the peak, its time and (lazily) each stack\'s ' +
    'in use at that moment (docs/peak.md). `heaptap run` prints that peak and writes the stacks as ' +
    'peak.pb.gz; no poll is involved. massif runs the same program under valgrind with ' +
    '--peak-inaccuracy=0, so its peak snapshot is at the exact peak of requested bytes (mem_heap_B; ' +
    'its allocator overhead, mem_heap_extra_B, is left out, as heaptap does not see it). The total ' +
    'is the peak `heaptap run` reports; sites are the top 5 at massif\'s peak, from peak.pb.gz; ' +
    'errors are against massif.',
  ];
  const out: Record<string, unknown> = {};
  for (const p of peakProgs()) {
    const got = await attempt(`peak: ${p.name} under massif and heaptap`, async () => {
      const name = `peak-${p.name}-massif`;
      const dir = runDir(name);
      const f = join(dir, 'massif.out');
      const massifPrefix = ['valgrind', '--tool=massif', '-q', '--threshold=0', '--peak-inaccuracy=0', '--detailed-freq=1000000',
        `--massif-out-file=${f}`];
      const m = await p.cmd(massifPrefix, dir);
      recordCmd(name, m.cmd, m.env);
      await run(name, m.cmd, m.env);
      const massif = readMassifPeak(readFileSync(f, 'utf8'), f);
      const hp: Record<string, Array<{ total: number; sites: Sites }>> = {};
      const confs: Array<[string, HeaptapOpts]> = [];
      for (let seed = 1; seed <= SIZES.peakSeeds; seed++) confs.push(['heaptap', { seed }]);
      confs.push(['heaptap-r1', { seed: 1, rate: 1 }]);
      for (const [c, o] of confs) {
        const rname = `peak-${p.name}-${c}-seed${o.seed}`;
        const rdir = runDir(rname);
        const h = heaptapCmd(rdir, o);
        const w = await p.cmd(h.cmd, rdir);
        const e = { ...w.env, ...h.env };
        recordCmd(rname, w.cmd, e);
        await run(rname, w.cmd, e);
        const peak = await readPprof(onlyFile(rdir, /^heaptap\.\d+\.peak\.pb\.gz$/, 'peak profile'));
        (hp[c] ??= []).push({ total: summaryPeak(rname), sites: peak });
        if (o.rate === 1 && !totalOf(peak, 'inuseBytes')) throw new Error(`${c}: an empty peak profile`);
      }
      return { massif, hp };
    });
    if (!got) {
      parts.push('', `#### ${p.title}`, '', 'FAILED');
      continue;
    }
    const { massif, hp } = got;
    const top = [...massif.sites].filter(([k]) => k !== NO_SITE).sort((a, b) => b[1] - a[1]).slice(0, 5).map(([k]) => k);
    const cell = (c: string, site?: string) => {
      const v = hp[c]!.map((r) => (site ? r.sites.get(site)?.inuseBytes ?? 0 : r.total));
      const want = site ? massif.sites.get(site) ?? 0 : massif.heapBytes;
      return [mib(v[0]!), pct(rel(v[0]!, want))].join(' ') + (v.length > 1 ? `; ${SIZES.peakSeeds} seeds ${spread(v.map((x) => rel(x, want)))}` : '');
    };
    const rows = [['**peak in use**', mib(massif.heapBytes), cell('heaptap'), cell('heaptap-r1')],
      ...top.map((s) => ['`' + s + '`', mib(massif.sites.get(s)!), cell('heaptap', s), cell('heaptap-r1', s)])];
    out[p.name] = {
      massif: { heapBytes: massif.heapBytes, extraBytes: massif.extraBytes, sites: Object.fromEntries(top.map((s) => [s, massif.sites.get(s)])) },
      heaptap: Object.fromEntries(Object.entries(hp).map(([c, runs]) => [c, runs.map((r) => ({
        total: r.total, sites: Object.fromEntries(top.map((k) => [k, r.sites.get(k)?.inuseBytes ?? 0])) }))])),
    };
    parts.push('', `#### ${p.title}`, '',
      `massif's peak: ${mib(massif.heapBytes)} requested (+ ${mib(massif.extraBytes)} allocator overhead).`, '',
      table(['at the peak', 'massif', 'heaptap, default rate, seed 1 (error); spread', 'heaptap rate 1'],
        ['---', '---:', '---:', '---:'], rows));
  }
  results.peak = out;
  parts.push(note('accuracy-peak'));
  return parts.join('\n');
}

// ---- the section -------------------------------------------------------------------------------

/** The hand-written paragraph for a table (bench/notes/NAME.md), in full mode only: it was
 * written for the figures of the run that RESULTS.md holds. */
function note(name: string): string {
  const f = join(BENCH, 'notes', `${name}.md`);
  return MODE === 'full' && existsSync(f) ? '\n' + readFileSync(f, 'utf8').trim() : '';
}

async function versions(): Promise<string> {
  const line = async (cmd: string[]) => (await output('version', cmd).catch(() => '?')).trim().split('\n').pop();
  const deb = (p: string) => line(['dpkg-query', '-W', '-f=${Version}', p]);
  return [
    `heaptap ${(await line(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']))}` +
    ((await output('version', ['git', '-C', ROOT, 'status', '--porcelain', '--', 'preload', 'proto', 'src'])).trim()
      ? ' + uncommitted changes in preload/, proto/ or src/, ' : ', ') +
    `heaptrack ${await deb('heaptrack')}, valgrind ${await deb('valgrind')}, jemalloc ${await deb('libjemalloc2')} (jeprof), ` +
    `gperftools ${await deb('libgoogle-perftools4')} (tcmalloc; its dumps read with go tool pprof, ${/go[\d.]+/.exec((await line([findGo(), 'version'])) ?? '')?.[0] ?? 'go ?'}), gcc ${await deb('gcc-12')}, python3 ${await deb('python3.11')}, ` +
    `redis ${await deb('redis-server')}`,
    `${cpus().length} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
  ].join('; ');
}

async function main(): Promise<number> {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(LOGS, { recursive: true });
  mkdirSync(RUNS, { recursive: true });
  for (const f of [CHURN, join(ROOT, 'preload/build/libheaptap.so'), join(ROOT, 'src/addon/build/heaptap.node'), JEMALLOC, TCMALLOC]) {
    if (!existsSync(f)) throw new Error(`${f} is missing (bench/run.sh builds and installs everything this needs)`);
  }
  const t0 = Date.now();
  const date = new Date().toISOString().replace(/T(\d\d:\d\d).*/, ' $1 UTC');
  const results: Record<string, unknown> = { mode: MODE, date };
  const sections: string[] = [];
  if (ONLY.has('churn')) sections.push(await churnPart(results));
  if (ONLY.has('real')) sections.push(await realPart(results));
  if (ONLY.has('peak')) sections.push(await peakPart(results));
  const secs = Math.round((Date.now() - t0) / 1000);
  const md = [
    '## Accuracy: heaptap\'s figures against exact ones',
    '',
    `Run ${date} by \`${COMMAND}\` (bench/accuracy.ts, ${MODE} mode, ${secs} s` +
    (COMMAND.includes('--only') ? ')' : '; `bash bench/run.sh --only accuracy` runs this part alone)') +
    `. Generated from bench/out/${MODE}/accuracy/; ` +
    'the paragraphs under the tables are hand-written (bench/notes/accuracy-*.md) for the run they name.',
    '',
    await versions(),
    '',
    'A site is the innermost named frame of a stack that is not an allocator function (malloc and its ' +
    'siblings, operator new, strdup, and wrappers that only pass a size on: xmalloc in gcc, zmalloc in ' +
    'redis, PyMem_/PyObject_ allocators in CPython). The binaries of gcc, python3 and redis keep only ' +
    'dynamic symbols, so a static function has no name and its allocations count under its nearest ' +
    'named caller, for every profiler alike (bench/accuracy-read.ts).',
    '',
    ...sections.flatMap((s) => [s, '']),
    '#### Commands',
    '',
    '$DIR is a fresh directory per run under bench/out/' + MODE + '/accuracy/runs/; heaptap runs through its CLI ' +
    '(`node src/cli.ts run`, what ./heaptap runs).',
    '',
    '```',
    ...commands.map(([k, c]) => `[${k}] ${c}`),
    '```',
  ];
  if (failures.length) md.push('', '#### Failures', '', '```', ...failures, '```');
  writeFileSync(join(OUT, 'accuracy.md'), md.join('\n').replace(/\n{3,}/g, '\n\n') + '\n');
  writeFileSync(join(OUT, 'accuracy.json'), JSON.stringify({ ...results, failures, seconds: secs }, null, 1) + '\n');
  process.stderr.write(`accuracy: ${failures.length} failure(s), ${secs} s; ${join(OUT, 'accuracy.md')}\n`);
  for (const f of failures) process.stderr.write(`accuracy: FAILED ${f}\n`);
  return failures.length ? 1 : 0;
}

process.exitCode = await main();
