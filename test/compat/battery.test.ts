// The compatibility battery: heaptap's first promise is that the program it is preloaded
// into never notices it. Real runtimes and servers (a JVM, Rust and Go binaries, Node.js
// workers, CPython, perl, sqlite3, redis-server) and a C regression fixture run unprofiled
// and then under LD_PRELOAD=libheaptap.so at the default rate and at HEAPTAP_SAMPLE_RATE=1
// (every allocation unwound: the most calls into the preload from the most places). Each
// profiled run must end with the unprofiled run's stdout and exit code within a bound far
// above its unprofiled time (a hang never finishes: it is killed, with its process group,
// and counts as a failure), and leave region files that read back and hold stacks through
// the program's own code.
//
// The programs are test/compat/programs/ (and test/fixtures/getattr_thread.c); the
// runtimes are Debian's, installed and the compiled programs built and cached by
// scripts/peers/battery.sh. The table of results (program, rate, result, unprofiled and
// profiled seconds, slowdown) is logged, and written to $HEAPTAP_BATTERY_REPORT if set.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { stackFrames } from '../../src/region.ts';
import { fixtures, frameNames, preload, regionsIn, root } from '../preload/run.ts';
import { execGroup } from '../helpers/procs.ts';

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;
const programs = join(root, 'test/compat/programs');
const node = join(root, 'node_modules/.bin/node');

type Rate = 'default' | '1' | '4096';

/** A run's bound: max(60 s, 20 x unprofiled). No program here comes near it when it works
 * (the slowest measured, the Rust allocation loop at rate 1, took 7x); a hang never ends. */
const boundMs = (unprofiledMs: number) => Math.max(60_000, 20 * unprofiledMs);
/** The unprofiled runs take seconds; this only keeps a broken peer from waiting forever. */
const UNPROFILED_BOUND_MS = 120_000;
/** Programs run two at a time: each is multi-threaded, the machine may have 2 cores, and
 * another test file runs beside this one. A program's own runs (unprofiled, then each
 * rate) are sequential. */
const PARALLEL = 2;

// ---- processes: every one in its own process group, killed with it on every path --------

const live = new Set<number>();
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch { /* already gone */ }
}
function killAll(): void {
  for (const pid of live) killGroup(pid);
  live.clear();
}
// ava ends a worker that timed out with SIGTERM: take the process groups with it.
process.on('exit', killAll);
process.once('SIGTERM', () => {
  killAll();
  process.kill(process.pid, 'SIGTERM');
});

interface Outcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
  pid: number;
  /** when timed out: the process's threads by state and wait channel, read just before
   * the kill (a deadlock shows as every thread asleep, most in futex_wait_queue) */
  stuck: string;
}

/** "N x state wchan" counts over /proc/<pid>/task (R running, S sleeping, ...). */
function threadStates(pid: number): string {
  const counts = new Map<string, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
        const wchan = readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8') || '-';
        const key = `${state} ${wchan}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      } catch { /* the thread ended */ }
    }
  } catch {
    return `pid ${pid} gone`;
  }
  return [...counts].map(([k, n]) => `${n} x ${k}`).join(', ');
}

interface Proc {
  pid: number;
  done: Promise<Outcome>;
}

/** Starts cmd in its own process group, killed (group and all) after boundMs or when the
 * test ends, whichever is first. */
function start(t: ExecutionContext, cmd: string[], env: Record<string, string>, ms: number, cwd = programs): Proc {
  const began = performance.now();
  const child = spawn(cmd[0]!, cmd.slice(1), { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pid = child.pid;
  if (pid === undefined) {
    return { pid: -1, done: Promise.reject(new Error(`cannot start ${cmd[0]}`)) };
  }
  live.add(pid);
  t.teardown(() => {
    if (live.delete(pid)) killGroup(pid);
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  let timedOut = false;
  let stuck = '';
  const timer = setTimeout(() => {
    timedOut = true;
    stuck = threadStates(pid);
    killGroup(pid);
  }, ms);
  const done = new Promise<Outcome>((res, rej) => {
    child.on('error', (e) => {
      clearTimeout(timer);
      rej(e);
    });
    child.on('close', (code, signal) => {
      const elapsed = performance.now() - began;
      clearTimeout(timer);
      // Anything it left behind in its group (a forked worker) goes too.
      if (live.delete(pid)) killGroup(pid);
      res({ code, signal, stdout, stderr, ms: elapsed, timedOut, pid, stuck });
    });
  });
  return { pid, done };
}

// ---- what the battery runs ---------------------------------------------------------------

/** `name=path` lines from scripts/peers/battery.sh. */
type Peers = Record<string, string>;

interface Program {
  /** the row's name in the table */
  name: string;
  title: string;
  rates: Rate[];
  /** one run; env is the whole environment (with the preload's variables when profiled) */
  run: (t: ExecutionContext, peers: Peers, env: Record<string, string>, ms: number) => Promise<Outcome>;
  /** the unprofiled run's exit code and stdout: the program did its work at all */
  code: number;
  stdout: RegExp;
  /** a frame of the program's own code or runtime: its module's file name, and the
   * function's name there when the module has symbols */
  own: { module: RegExp; name?: RegExp };
  /** rates at which the program allocates enough for its own frames to be sampled with
   * certainty (default: all) */
  framesAt?: Rate[];
}

const both: Rate[] = ['default', '1'];
const simple =
  (cmd: (p: Peers) => string[]): Program['run'] =>
  (t, peers, env, ms) =>
    start(t, cmd(peers), env, ms).done;

const PROGRAMS: Program[] = [
  {
    name: 'getattr_thread (C)',
    title: 'threads that call pthread_getattr_np on themselves do not hang under the preload',
    rates: ['1', '4096', 'default'],
    run: simple(() => [join(fixtures, 'getattr_thread')]),
    code: 0,
    stdout: /^ok 50\n$/,
    own: { module: /^getattr_thread$/, name: /^thr$/ },
    // 50 threads allocate a few KiB in all: only rate 1 samples them for certain (at the
    // default rate the process usually makes no region at all).
    framesAt: ['1'],
  },
  {
    name: 'java: 3,000 short threads',
    title: 'a JVM starting 3,000 short-lived threads runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.java!, '-Xmx256m', '-cp', p.java_classes!, 'ShortThreads', '3000']),
    code: 0,
    stdout: /^threads 3000 checksum -?\d+\n$/,
    own: { module: /^libjvm\.so$/, name: /\w/ },
  },
  {
    name: 'java: 8 allocating threads + zip',
    title: 'a JVM allocating on 8 threads and natively through java.util.zip runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.java!, '-Xmx256m', '-cp', p.java_classes!, 'AllocThreads', '300']),
    code: 0,
    stdout: /^threads 8 rounds 300 checksum -?\d+\n$/,
    own: { module: /^(libjvm\.so|libzip\.so|libz\.so\.1)$/, name: /\w/ },
  },
  {
    name: 'rust: 20,000 threads in turn',
    title: 'a Rust program spawning 20,000 threads one after another runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.rust_spawn_serial!, '20000']),
    code: 0,
    stdout: /^spawned 20000 threads one after another, total \d+\n$/,
    // Each thread allocates about 600 bytes there: about 20 samples expected at the default
    // rate, so none at all has a probability of e^-20.
    own: { module: /^spawn_serial$/, name: /^spawn_serial::battery_thread_work$/ },
  },
  {
    name: 'rust: 8 allocating threads',
    title: 'a multi-threaded allocating Rust program runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.rust_alloc_threads!, '200000']),
    code: 0,
    stdout: /^threads 8 rounds 200000 checksum \d+\n$/,
    own: { module: /^alloc_threads$/, name: /^alloc_threads::battery_alloc_work/ },
  },
  {
    name: 'go: cgo malloc, 32 goroutines',
    title: 'a Go program calling C malloc and free from 32 goroutines runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.go_cgo_malloc!, '400']),
    code: 0,
    stdout: /^goroutines 32 calls 400 checksum \d+\n$/,
    own: { module: /^cgo_malloc$/, name: /^battery_c_alloc$/ },
  },
  {
    name: 'node: 8 worker_threads',
    title: 'Node.js with worker_threads runs unchanged under the preload',
    rates: both,
    run: simple(() => [node, 'workers.mjs', '300']),
    code: 0,
    stdout: /^workers 8 rounds 300 checksum \d+\n$/,
    own: { module: /^node$/, name: /^(node|v8)::/ },
  },
  {
    name: 'python: 8 threads',
    title: 'CPython with 8 threads runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.python3!, 'threads.py', '300']),
    code: 0,
    stdout: /^threads 8 rounds 300 checksum \d+\n$/,
    own: { module: /^(python3[.\d]*|libpython3[.\d]*so[.\d]*)$/, name: /^_?Py/ },
  },
  {
    name: 'python: fork Pool(4)',
    title: 'a fork-based multiprocessing.Pool runs unchanged under the preload',
    rates: both,
    run: simple((p) => [p.python3!, 'pool.py', '2000']),
    code: 0,
    stdout: /^pool 4 tasks 2000 checksum \d+\n$/,
    own: { module: /^(python3[.\d]*|libpython3[.\d]*so[.\d]*)$/, name: /^_?Py/ },
  },
  {
    name: 'perl: fork, exit codes',
    title: 'a perl script that forks a child keeps its output and exit codes under the preload',
    rates: both,
    run: simple((p) => [p.perl!, 'fork.pl', '100000']),
    code: 3,
    stdout: /^child exited with 7, 50000 keys left\n$/,
    own: { module: /^(libperl\.so[.\d]*|perl)$/, name: /^Perl_/ },
  },
  {
    name: 'sqlite3: 100k rows',
    title: 'sqlite3 building and querying a 100,000-row table gives the same results under the preload',
    rates: both,
    run: simple((p) => [p.sqlite3!, ':memory:', '.read rows.sql']),
    code: 0,
    stdout: /^100000\|4799775\|4995000\.0\n[^]*\n66667\n$/,
    own: { module: /^(libsqlite3\.so[.\d]*|sqlite3)$/, name: /^sqlite3/ },
  },
  {
    name: 'redis-server + redis-benchmark',
    title: 'redis-server serves redis-benchmark and shuts down cleanly under the preload',
    rates: both,
    run: runRedis,
    code: 0,
    stdout: /^benchmark exit 0: SET GET INCR LPUSH LPOP\n$/, // redis-benchmark's order
    // redis-server is a link to redis-check-rdb, the file mapped in the process.
    own: { module: /^redis-(server|check-rdb)$/, name: /\w/ },
  },
];

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** redis-server (under env) on a free loopback port, driven by redis-benchmark (never
 * profiled: it is the load, not the subject), then SHUTDOWN NOSAVE. The outcome is the
 * server's: its exit code, and as stdout what the benchmark completed (redis' own output
 * has timings and pids). */
async function runRedis(t: ExecutionContext, p: Peers, env: Record<string, string>, ms: number): Promise<Outcome> {
  const deadline = performance.now() + ms;
  const left = () => Math.max(1, deadline - performance.now());
  const port = String(await freePort());
  const work = await mkdtemp(join(tmpdir(), 'heaptap-battery-redis-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const clean = { PATH: env.PATH!, HOME: env.HOME! };
  const server = start(t, [p.redis_server!, '--port', port, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', work, '--logfile', ''], env, ms, work);
  let ended: Outcome | undefined;
  void server.done.then((o) => (ended = o), () => {});
  const cli = (...args: string[]) => start(t, [p.redis_cli!, '-h', '127.0.0.1', '-p', port, ...args], clean, left()).done;
  while (!ended && performance.now() < deadline && !(await cli('ping')).stdout.includes('PONG')) await sleep(50);
  let bench: Outcome | undefined;
  if (!ended && performance.now() < deadline) {
    bench = await start(t, [p.redis_benchmark!, '-h', '127.0.0.1', '-p', port, '-n', '20000', '-c', '8', '-q',
      '-t', 'set,get,lpush,lpop,incr'], clean, left()).done;
    await cli('shutdown', 'nosave');
  }
  const o = await server.done;
  const tests = (bench?.stdout ?? '').split(/[\r\n]+/).map((l) => /^(\w+): [\d.]+ requests per second/.exec(l)?.[1]).filter(Boolean);
  return {
    ...o,
    stdout: bench ? `benchmark exit ${bench.code}: ${tests.join(' ')}\n` : 'benchmark not run: server not ready\n',
    stderr: `${o.stdout}${o.stderr}${bench ? `\nredis-benchmark: ${bench.stderr}` : ''}`.slice(-4000),
  };
}

// ---- checks --------------------------------------------------------------------------------

/** What is wrong with the regions a profiled run left in dir ('' if nothing), and the own
 * frame found. Every region must read back, belong to a process that has ended, have no
 * malformed items; one must be the program's own process; one must hold a stack with a
 * frame of the program's own code (when wantFrames). */
async function checkRegions(dir: string, pid: number, own: Program['own'], wantFrames: boolean): Promise<{ problem: string; frame: string }> {
  let regions;
  try {
    regions = await regionsIn(dir);
  } catch (e) {
    return { problem: `a region does not read back: ${(e as Error).message}`, frame: '' };
  }
  // A process that never reaches a sample point makes no region (by design: a short
  // process costs nothing); where it allocates too little to be sampled for certain, none
  // is required.
  if (regions.length === 0) return { problem: wantFrames ? 'no region file written' : '', frame: '' };
  if (!regions.some((r) => r.header.pid === pid)) {
    return { problem: `no region of the program's process (pid ${pid}; regions of ${regions.map((r) => r.header.pid).join(', ')})`, frame: '' };
  }
  for (const r of regions) {
    if (r.alive) return { problem: `region of pid ${r.header.pid} still held by a live writer`, frame: '' };
    if (r.malformed) return { problem: `region of pid ${r.header.pid}: ${r.malformed} malformed items (${r.firstMalformed})`, frame: '' };
  }
  if (!wantFrames) return { problem: '', frame: '' };
  for (const r of regions) {
    for (let i = 0; i < r.stacks.ids.length; i++) {
      for (const pc of stackFrames(r.stacks, i)) {
        const m = r.modules.find((mod) => pc >= mod.start && pc < mod.limit);
        if (!m || !own.module.test(basename(m.path))) continue;
        const [name] = await frameNames(r, BigUint64Array.of(pc));
        if (!own.name || own.name.test(name!)) return { problem: '', frame: `${basename(m.path)}!${name}` };
      }
    }
  }
  const stacks = regions.reduce((n, r) => n + r.stacks.ids.length, 0);
  return { problem: `no stack through ${own.module}${own.name ? ` ${own.name}` : ''} among ${stacks} stacks`, frame: '' };
}

// ---- the table ----------------------------------------------------------------------------

interface Row {
  program: string;
  rate: string;
  result: string;
  unprofiled: number;
  profiled: number | undefined;
}
const rows = new Map<string, Row[]>(PROGRAMS.map((p) => [p.name, []]));

function table(list: Row[]): string {
  const head = ['program', 'rate', 'result', 'unprofiled s', 'profiled s', 'slowdown'];
  const body = list.map((r) => [
    r.program,
    r.rate,
    r.result,
    r.unprofiled.toFixed(2),
    r.profiled === undefined ? '-' : r.profiled.toFixed(2),
    r.profiled === undefined || r.result.startsWith('hang') ? '-' : `${(r.profiled / r.unprofiled).toFixed(1)}x`,
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(width[i]!)).join(' | ')} |`;
  return [line(head), `|${width.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

// ---- the tests ----------------------------------------------------------------------------

let peers: Peers = {};
test.before('installs and builds the battery\'s programs (scripts/peers/battery.sh)', async (t) => {
  // The first run on a machine installs Debian packages (a JDK, redis) and compiles.
  t.timeout(15 * 60_000);
  try {
    const { stdout } = await exec('bash', [join(root, 'scripts/peers/battery.sh')], { timeout: 14 * 60_000 });
    peers = Object.fromEntries(stdout.trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  } catch (e) {
    throw new Error(`scripts/peers/battery.sh failed: ${(e as { stderr?: string }).stderr || (e as Error).message}`);
  }
});

let free = PARALLEL;
const waiting: (() => void)[] = [];
async function slot<T>(fn: () => Promise<T>): Promise<T> {
  if (free > 0) free--;
  else await new Promise<void>((r) => waiting.push(r));
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else free++;
  }
}

const baseEnv = (): Record<string, string> => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', LANG: 'C.UTF-8' });

for (const prog of PROGRAMS) {
  test(prog.title, (t) =>
    slot(async () => {
      t.timeout(UNPROFILED_BOUND_MS + 30_000);
      const base = await prog.run(t, peers, baseEnv(), UNPROFILED_BOUND_MS);
      const baseOk = !base.timedOut && base.signal === null && base.code === prog.code && prog.stdout.test(base.stdout);
      if (!baseOk) {
        rows.get(prog.name)!.push({ program: prog.name, rate: '-', result: 'fail: unprofiled run failed', unprofiled: base.ms / 1000, profiled: undefined });
        t.fail(`${prog.name} fails unprofiled (the battery's program or peer is broken, not the preload): ` +
          `${base.timedOut ? 'timed out' : `exit ${base.code ?? base.signal}`}\nstdout: ${base.stdout.slice(0, 500)}\nstderr: ${base.stderr.slice(-1500)}`);
        return;
      }
      const ms = boundMs(base.ms);
      t.timeout(prog.rates.length * (ms + 30_000));
      const mine = rows.get(prog.name)!;
      // Every rate runs, whatever the one before did (a failed assertion ends an ava test):
      // the failures are asserted at the end.
      const failures: string[] = [];
      for (const rate of prog.rates) {
        const dir = await mkdtemp(join(tmpdir(), 'heaptap-battery-'));
        t.teardown(() => rm(dir, { recursive: true, force: true }));
        const env = { ...baseEnv(), LD_PRELOAD: preload, HEAPTAP_DIR: dir, ...(rate === 'default' ? {} : { HEAPTAP_SAMPLE_RATE: rate }) };
        const o = await prog.run(t, peers, env, ms);
        let result = 'pass';
        let frame = '';
        if (o.timedOut) result = `hang (killed after ${(ms / 1000).toFixed(0)} s)`;
        else if (o.signal !== null || o.code !== base.code) result = `fail: exit ${o.code ?? o.signal}, unprofiled ${base.code}`;
        else if (o.stdout !== base.stdout) result = 'fail: stdout differs';
        else {
          const c = await checkRegions(dir, o.pid, prog.own, (prog.framesAt ?? prog.rates).includes(rate));
          if (c.problem) result = `fail: ${c.problem}`;
          frame = c.frame;
        }
        mine.push({ program: prog.name, rate, result, unprofiled: base.ms / 1000, profiled: o.timedOut ? undefined : o.ms / 1000 });
        if (result === 'pass') {
          if (frame) t.log(`rate ${rate}: own frame ${frame}`);
        } else {
          failures.push(`${prog.name} at rate ${rate}: ${result}${o.timedOut ? `\nthreads when killed: ${o.stuck}` : ''}` +
            `\nstdout: ${JSON.stringify(o.stdout.slice(0, 300))} (unprofiled: ${JSON.stringify(base.stdout.slice(0, 300))})` +
            `\nstderr: ${o.stderr.slice(-1500)}`);
        }
      }
      t.log(`\n${table(mine)}`);
      if (failures.length) t.fail(failures.join('\n\n'));
      else t.pass();
    }),
  );
}

test.after.always('logs the table of results', async (t) => {
  const all = PROGRAMS.flatMap((p) => rows.get(p.name)!);
  const text = `${table(all)}\n`;
  t.log(`\n${text}`);
  if (process.env.HEAPTAP_BATTERY_REPORT) await writeFile(process.env.HEAPTAP_BATTERY_REPORT, text);
});
