// Sidecar cost: what the agent spends to turn regions into profiles, and what it holds.
//
//   npm run bench:sidecar            all sizes, prints a table
//   npm run bench:sidecar -- --write also replaces the "## Sidecar cost" section of
//                                    bench/RESULTS.md
//   npm run bench:sidecar -- --quick 1k and 10k stacks, 20 processes (checks the harness)
//
// Regions are synthetic (test/helpers/regionBuilder.ts writes them byte by byte) but their
// frames are real addresses: return addresses spread over the executable segments of
// libc.so.6 (ELF symbols only) and of a copy of the heaptap addon (full DWARF), so the
// symbolizer does the work it does in production. Stacks share a 4-frame root, then 4 to 12
// frames drawn from a pool of distinct addresses (half as many as stacks).
//
// Per size (1k, 10k, 100k stacks), in this process:
//   read       readRegionAsync(path, 0): the whole snapshot (the agent does this once)
//   poll       readRegionAsync(path, next): counters only (every --poll after that)
//   tables     the agent's per-process symbol tables (src/agent/pprof.ts) with a fresh
//              Symbolizer: files opened, every address resolved (once per process)
//   encode     encodeHeapProfile over the counters (after JIT warm-up) and a BestSpeed gzip
// Then through `heaptap agent` in a child process: GET /debug/pprof/heap cold and warm,
// with /healthz fetched every 10 ms meanwhile (its worst latency is how long the agent's
// event loop was blocked), and the agent's RSS.
//
// Steady state: 100 live processes (a helper holds the regions' flocks, as the preload
// does) of 1k stacks each, one agent: RSS after the first polls, after three /metrics
// scrapes (the first symbolizes every process's top sites), after a merged /heap of all
// 100; CPU per second of idle polling.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

import { encodeHeapProfile, gzipProfile, SymbolTables } from '../src/agent/pprof.ts';
import { StackStore } from '../src/agent/stackStore.ts';
import { decodeProfile } from '../src/profile.ts';
import { readRegionAsync, type RegionSnapshot } from '../src/region.ts';
import { Symbolizer } from '../src/symbolize.ts';
import { buildRegion, MODULE_MAIN, OBJ_ONE, SLAB_ACTIVE, STATE_RUNNING, type CountSpec, type ModuleSpec } from '../test/helpers/regionBuilder.ts';

const root = resolve(import.meta.dirname, '..');
const args = new Set(process.argv.slice(2));
const quick = args.has('--quick');
const write = args.has('--write');
const SIZES = process.env.BENCH_SIZES ? process.env.BENCH_SIZES.split(',').filter(Boolean).map(Number) : quick ? [1000, 10_000] : [1000, 10_000, 100_000];
const STEADY_PROCESSES = Number(process.env.BENCH_PROCESSES ?? (quick ? 20 : 100));
const STEADY_STACKS = 1000;
const TARGET_MS = 250;
/** standard-library files the real python3 region parses and compiles */
const PYTHON_FILES = Number(process.env.BENCH_PYTHON_FILES ?? 400);
const TARGET_RSS_MB = 150;

// ---------------------------------------------------------------------------------------
// Modules with real files.

interface RealModule {
  path: string;
  buildId: number[];
  /** the executable PT_LOAD segment: file offset, vaddr, size */
  offset: bigint;
  vaddr: bigint;
  size: bigint;
}

export function elfModule(path: string): RealModule {
  const notes = execFileSync('readelf', ['-n', path], { encoding: 'utf8' });
  const id = /Build ID: ([0-9a-f]+)/.exec(notes)?.[1];
  if (!id) throw new Error(`${path}: no build id`);
  const phdrs = execFileSync('readelf', ['-lW', path], { encoding: 'utf8' });
  const m = /LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+R E/.exec(phdrs);
  if (!m) throw new Error(`${path}: no executable segment`);
  return { path, buildId: id.match(/../g)!.map((h) => parseInt(h, 16)), offset: BigInt(m[1]!), vaddr: BigInt(m[2]!), size: BigInt(m[3]!) };
}

interface Placed {
  spec: ModuleSpec;
  start: bigint;
  limit: bigint;
}

/** The modules placed where process pid really maps them (its executable mapping of each
 * file): the agent symbolizes a module only as a live process maps it (src/moduleFiles.ts),
 * so the synthetic regions name that process's pid. */
export function placeIn(pid: number, mods: RealModule[]): Placed[] {
  const maps = parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
  return mods.map((m, i) => {
    const real = realpathSync(m.path);
    const e = maps.find((x) => x.path === real && x.offset <= m.offset && m.offset < x.offset + (x.end - x.start) && x.exec);
    if (!e) throw new Error(`process ${pid} does not map ${m.path} executable`);
    const bias = e.start - e.offset - (m.vaddr - m.offset);
    const start = bias + m.vaddr;
    const limit = start + m.size;
    return {
      start,
      limit,
      spec: { path: m.path, flags: i === 0 ? MODULE_MAIN : 0, loadBias: bias, start, limit, fileOffset: m.offset, buildId: m.buildId },
    };
  });
}

/** A process that maps libc and path (dlopened) and sleeps until killed. */
async function mapper(path: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['-e', `process.dlopen({ exports: {} }, ${JSON.stringify(path)}); setInterval(() => {}, 1e9);`], { stdio: 'ignore' });
  for (let i = 0; i < 400; i++) {
    if (readFileSync(`/proc/${child.pid}/maps`, 'utf8').includes(path)) return child;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`a node process did not map ${path}`);
}

function parseMaps(text: string): { start: bigint; end: bigint; offset: bigint; exec: boolean; path: string }[] {
  return text.split('\n').flatMap((l) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s+(\/.*)$/.exec(l);
    return m ? [{ start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), offset: BigInt('0x' + m[4]), exec: m[3]!.includes('x'), path: m[5]! }] : [];
  });
}

// ---------------------------------------------------------------------------------------
// Synthetic regions.

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

function pow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export type Shape = 'tree' | 'random';

/** Stack shapes. 'tree': walks down a call graph, as real programs' stacks are: a pool of
 * call sites (a tenth as many as stacks), each calling a few others (the first ones most
 * often), from one of a few entry points, 6 to 24 frames deep; stacks share prefixes and
 * gzip finds repeats, as in real profiles (a real python3 region compresses to 12%).
 * 'random': 4 to 12 frames drawn independently from a pool half as large as the stacks
 * (the worst case for compression: location ids are noise). Both end in a 4-frame root. */
function makeStacks(n: number, r: () => number, pick: () => bigint, shape: Shape): { frames: bigint[] }[] {
  const rootChain = Array.from({ length: 4 }, pick);
  const stacks: { frames: bigint[] }[] = [];
  const seen = new Set<string>();
  if (shape === 'random') {
    const poolSize = Math.max(64, Math.floor(n / 2));
    const pool = Array.from({ length: poolSize }, pick);
    while (stacks.length < n) {
      const depth = 4 + Math.floor(r() * 9);
      const frames = Array.from({ length: depth }, () => pool[Math.floor(r() * poolSize)]!);
      const key = frames.join(',');
      if (seen.has(key)) continue;
      seen.add(key);
      stacks.push({ frames: [...frames, ...rootChain] });
    }
    return stacks;
  }
  const poolSize = Math.max(64, Math.floor(n / 10));
  const pool = Array.from({ length: poolSize }, pick);
  const callees = pool.map(() => Array.from({ length: 2 + Math.floor(r() * 7) }, () => Math.floor(r() * poolSize)));
  const entries = Array.from({ length: 8 }, () => Math.floor(r() * poolSize));
  while (stacks.length < n) {
    const depth = 6 + Math.floor(r() * 19);
    let at = entries[Math.floor(r() * r() * entries.length)]!;
    const path = [at];
    for (let d = 1; d < depth; d++) {
      const c = callees[at]!;
      at = c[Math.floor(r() * r() * c.length)]!;
      path.push(at);
    }
    const key = path.join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    stacks.push({ frames: [...path.reverse().map((i) => pool[i]!), ...rootChain] }); // innermost first
  }
  return stacks;
}

export function makeRegion(dir: string, name: string, pid: number, n: number, placed: Placed[], seed: number, shape: Shape = 'tree'): string {
  const r = rng(seed);
  const pick = (m: Placed) => m.start + 1n + BigInt(Math.floor(r() * Number(m.limit - m.start - 2n)));
  // 70% of frames in the first module (libc), 30% in the second (DWARF).
  const stacks = makeStacks(n, r, () => pick(r() < 0.7 ? placed[0]! : placed[1]!), shape);
  const slab: CountSpec[] = [];
  const shared: CountSpec[] = [];
  stacks.forEach((_, i) => {
    const objects = 1n + BigInt(Math.floor(r() * 1000));
    const bytes = objects * BigInt(16 + Math.floor(r() * 4096));
    const freed = (bytes * BigInt(Math.floor(r() * 100))) / 100n;
    const c = { allocObjects: objects * OBJ_ONE, allocBytes: bytes, freeObjects: (objects * OBJ_ONE * freed) / bytes, freeBytes: freed, samples: objects };
    (i % 2 ? slab : shared).push({ stackId: 2 + i, counters: c });
  });
  const frames = stacks.reduce((s, x) => s + x.frames.length, 0);
  const { buf } = buildRegion({
    capacities: { stacks: n + 2, stackIndex: pow2(2 * (n + 2)), frames, shared: n + 2, slabs: 1, modules: 8 },
    slabEntries: pow2(Math.ceil(slab.length * 1.5) + 1),
    stacks,
    modules: placed.map((p) => p.spec),
    slabs: [{ state: SLAB_ACTIVE, entries: slab }],
    shared,
    header: { pid, state: STATE_RUNNING, exe: placed[0]!.spec.path, service: `bench-${pid}`, sampleRate: 524288n, startNs: BigInt(Date.now()) * 1_000_000n },
  });
  const path = join(dir, name);
  writeFileSync(path, buf);
  return path;
}

/** A real region: Debian's python3 (PYTHONMALLOC=malloc, so every object goes through
 * malloc) parsing and compiling standard-library files under the preload at rate 1, every
 * allocation recorded. Deep interpreter stacks, a few thousand distinct return addresses;
 * the process has exited when it is read, as a finished job's region is. */
function pythonRegion(dir: string, files: number): string {
  const python = '/usr/bin/python3';
  if (!existsSync(python)) throw new Error(`${python} is missing (apt-get install python3)`);
  const script = [
    'import ast, glob',
    `files = sorted(glob.glob('/usr/lib/python3*/**/*.py', recursive=True))[:${files}]`,
    'for f in files:',
    '    try:',
    "        compile(ast.parse(open(f, encoding='utf-8').read()), f, 'exec')",
    '    except Exception:',
    '        pass',
  ].join('\n');
  execFileSync(python, ['-c', script], {
    env: {
      PATH: process.env.PATH, PYTHONMALLOC: 'malloc', LD_PRELOAD: join(root, 'preload/build/libheaptap.so'),
      HEAPTAP_DIR: dir, HEAPTAP_SAMPLE_RATE: '1', HEAPTAP_SEED: '1', HEAPTAP_MAX_STACKS: '262144',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const regions = readdirSync(dir).filter((f) => f.endsWith('.heaptap')).map((f) => join(dir, f));
  if (regions.length === 0) throw new Error('python3 left no region (is the preload built?)');
  // The interpreter's region is the largest (no child processes are expected).
  return regions.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
}

// ---------------------------------------------------------------------------------------
// Measuring.

const ms = (t0: number) => performance.now() - t0;
/** CPU time of this process (user + system) in ms: on a loaded machine the wall time of a
 * step includes waiting for a core, its CPU time does not. */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mb = (bytes: number) => (bytes / 1048576).toFixed(0);

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)![1]) * 1024;
}

/** The anonymous part of RSS (heap, V8, native caches), without the file-backed pages of
 * the node binary and shared libraries (about 59 MB of an idle agent's 104 MB). */
function anonOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^RssAnon:\s+(\d+)/m.exec(status)![1]) * 1024;
}

function cpuTicksOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, clock ticks
}

interface ChildAgent {
  child: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

async function startAgent(dir: string): Promise<ChildAgent> {
  const child = spawn(process.execPath, [...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean), join(root, 'src/cli.ts'), 'agent', '--dir', dir, '--listen', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'warn', '--retention', '1h'], { stdio: ['ignore', 'ignore', 'pipe'] });
  // --log-level warn hides the "listening" line: find the port from /proc instead.
  const lines: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => lines.push(l));
  const port = await new Promise<number>((res, rej) => {
    const t0 = Date.now();
    const tick = () => {
      try {
        const tcp = readFileSync('/proc/net/tcp', 'utf8');
        const inodes = new Set(execFileSync('ls', ['-l', `/proc/${child.pid}/fd`], { encoding: 'utf8' }).match(/socket:\[(\d+)\]/g)?.map((s) => s.slice(8, -1)) ?? []);
        for (const row of tcp.split('\n').slice(1)) {
          const f = row.trim().split(/\s+/);
          if (f[3] === '0A' && inodes.has(f[9]!)) return res(parseInt(f[1]!.split(':')[1]!, 16));
        }
      } catch {
        // not up yet
      }
      if (Date.now() - t0 > 20_000) return rej(new Error(`agent did not listen: ${lines.join('\n')}`));
      setTimeout(tick, 50);
    };
    tick();
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    const r = await fetch(`${url}/readyz`).catch(() => null);
    if (r?.status === 200) break;
    await new Promise((r2) => setTimeout(r2, 50));
  }
  return {
    child,
    url,
    stop: () => new Promise((r) => {
      child.once('exit', () => r());
      child.kill('SIGTERM');
    }),
  };
}

/** GETs url while fetching /healthz every 10 ms; returns the request's time and the worst
 * /healthz latency seen meanwhile. */
async function timedGet(agent: ChildAgent, path: string): Promise<{ ms: number; bytes: number; healthMaxMs: number }> {
  let done = false;
  let healthMax = 0;
  const pinger = (async () => {
    while (!done) {
      const t0 = performance.now();
      await fetch(`${agent.url}/healthz`).then((r) => r.arrayBuffer());
      healthMax = Math.max(healthMax, ms(t0));
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const t0 = performance.now();
  const r = await fetch(`${agent.url}${path}`);
  const body = await r.arrayBuffer();
  const took = ms(t0);
  done = true;
  await pinger;
  if (r.status !== 200) throw new Error(`${path}: ${r.status} ${Buffer.from(body).toString()}`);
  return { ms: took, bytes: body.byteLength, healthMaxMs: healthMax };
}

/** Holds a shared flock on each path (what the preload does while its process runs). */
function holdLocks(paths: string[]): Promise<ChildProcess> {
  const code = 'import fcntl,sys\nfs=[open(p,"rb") for p in sys.argv[1:]]\nfor f in fs: fcntl.flock(f, fcntl.LOCK_SH)\nprint("locked", flush=True)\nsys.stdin.read()\n';
  const child = spawn('python3', ['-c', code, ...paths], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    child.stdout!.once('data', () => res(child));
    child.once('exit', (c) => rej(new Error(`lock holder exited ${c}`)));
  });
}

// ---------------------------------------------------------------------------------------

interface SizeRow {
  label: string;
  readCpu: number;
  pollCpu: number;
  buildColdCpu: number;
  buildWarmCpu: number;
  encodeCpu: number;
  stacks: number;
  frames: number;
  fileMb: number;
  read: number;
  poll: number;
  buildCold: number;
  buildWarm: number;
  encode: number;
  pbKb: number;
  totalCold: number;
  totalWarm: number;
  httpCold: number;
  httpWarm: number;
  healthMax: number;
  agentRss: number;
}

async function main(): Promise<void> {
  const work = mkdtempSync(join('/dev/shm', 'heaptap-bench-'));
  let stopMapper = () => {};
  const out: string[] = [];
  const say = (s: string) => {
    out.push(s);
    process.stdout.write(s + '\n');
  };
  try {
    // Copies, so that a rebuild of the addon during the run changes nothing.
    const dwarfCopy = join(work, 'heaptap-addon-copy.so');
    copyFileSync(join(root, 'src/addon/build/heaptap.node'), dwarfCopy);
    const maps = await mapper(dwarfCopy);
    stopMapper = () => maps.kill('SIGKILL');
    const mapsPid = maps.pid!;
    const placed = placeIn(mapsPid, [elfModule('/lib/x86_64-linux-gnu/libc.so.6'), elfModule(dwarfCopy)]);

    const rows: SizeRow[] = [];
    // The cases: tree-shaped stacks at each size, the random worst case at the largest,
    // and a real region (python3 at rate 1) in the full run.
    const cases: { label: string; n: number; make: (dir: string) => string }[] = SIZES.map((n) => ({
      label: n.toLocaleString('en-US'),
      n,
      make: (dir: string) => makeRegion(dir, `${1000 + n}-1.heaptap`, mapsPid, n, placed, n),
    }));
    if (!quick && SIZES.length > 0) {
      const n = Math.max(...SIZES);
      cases.push({ label: `${n.toLocaleString('en-US')}, random frames`, n, make: (dir) => makeRegion(dir, `${2000 + n}-1.heaptap`, mapsPid, n, placed, n, 'random') });
      cases.push({ label: 'python3 (real region)', n: 0, make: (dir) => pythonRegion(dir, PYTHON_FILES) });
    }
    for (const { label, n: wanted, make } of cases) {
      const dir = join(work, `case-${rows.length}`);
      execFileSync('mkdir', ['-p', dir]);
      const path = make(dir);
      const fileMb = readFileSync(path).length / 1048576;
      // Reads and symbolization run on the libuv pool: their CPU time is in cpuUsage too.
      let t0 = performance.now();
      let c0 = cpuMs();
      const snap: RegionSnapshot = await readRegionAsync(path, 0);
      const read = ms(t0);
      const readCpu = cpuMs() - c0;
      t0 = performance.now();
      c0 = cpuMs();
      await readRegionAsync(path, snap.stacks.next);
      const poll = ms(t0);
      const pollCpu = cpuMs() - c0;
      // What the agent does for a profile request (src/agent/pprof.ts): symbol tables
      // built once per process (cold: a fresh symbolizer, every address resolved), then an
      // encode over the counters and a BestSpeed gzip. The first encode runs before the JIT
      // has optimized it; "warm" is the third.
      // The python3 region's process has exited: the agent no longer opens files for a
      // process that is gone (src/moduleFiles.ts), so its row through the agent below has
      // no symbolization; here it is symbolized by the paths in its own region, as
      // `heaptap run` does (this bench made it).
      const sym = new Symbolizer({ trustRegionPaths: label.startsWith('python3') });
      const store = new StackStore();
      store.append(snap.stacks);
      const tables = new SymbolTables();
      t0 = performance.now();
      c0 = cpuMs();
      await tables.update(store, snap.modules, snap.header.pid, sym, (m) => process.stderr.write(m + '\n'));
      const buildCold = ms(t0);
      const buildColdCpu = cpuMs() - c0;
      const encodeOnce = async () => {
        const e0 = performance.now();
        const ec = cpuMs();
        const raw = encodeHeapProfile([{ snapshot: snap, tables }], { view: 'heap', exeLabel: false });
        const e1 = performance.now();
        const ec1 = cpuMs();
        const gz = await gzipProfile(raw);
        return { raw, gz, encode: e1 - e0, encodeCpu: ec1 - ec, gzip: ms(e1), gzipCpu: cpuMs() - ec1 };
      };
      const first = await encodeOnce();
      await encodeOnce();
      const third = await encodeOnce();
      const pb = first.gz;
      const buildWarm = third.encode;
      const buildWarmCpu = third.encodeCpu;
      const encode = third.gzip;
      const encodeCpu = third.gzipCpu;
      sym.close();
      const decoded = await decodeProfile(first.raw);
      const n = wanted > 0 ? wanted : snap.stacks.ids.length;
      if (wanted > 0 && decoded.sample.length !== n) throw new Error(`${label}: expected ${n} samples, got ${decoded.sample.length}`);
      if (decoded.sample.length < n * 0.5) throw new Error(`${label}: ${n} stacks but ${decoded.sample.length} samples`);
      const named = decoded.function.filter((f) => decoded.stringTable.strings[Number(f.name)]).length;
      if (named === 0) throw new Error('nothing was symbolized');

      // A live process's region is held by its flock (the preload's); the python3 one has
      // exited, and is served as an ended process.
      const holder = label.startsWith('python3') ? null : await holdLocks([path]);
      const agent = await startAgent(dir);
      const httpCold = await timedGet(agent, '/debug/pprof/heap');
      const httpWarm = await timedGet(agent, '/debug/pprof/heap');
      const agentRss = rssOf(agent.child.pid!);
      await agent.stop();
      holder?.kill();
      rows.push({
        label,
        readCpu, pollCpu, buildColdCpu, buildWarmCpu, encodeCpu,
        stacks: n, frames: snap.stacks.frames.length, fileMb, read, poll, buildCold, buildWarm, encode,
        pbKb: pb.length / 1024, totalCold: read + buildCold + first.encode + first.gzip, totalWarm: poll + buildWarm + encode,
        httpCold: httpCold.ms, httpWarm: httpWarm.ms, healthMax: Math.max(httpCold.healthMaxMs, httpWarm.healthMaxMs), agentRss,
      });
      process.stdout.write(`  ${label}: ${n} stacks done\n`);
      rmSync(dir, { recursive: true, force: true });
    }

    // Steady state.
    const dir = join(work, 'steady');
    execFileSync('mkdir', ['-p', dir]);
    const paths = Array.from({ length: STEADY_PROCESSES }, (_, i) => makeRegion(dir, `${20000 + i}-1.heaptap`, mapsPid, STEADY_STACKS, placed, 7 + i));
    const holder = await holdLocks(paths);
    const agent = await startAgent(dir);
    const pid = agent.child.pid!;
    await new Promise((r) => setTimeout(r, 3000));
    const rssPolls = rssOf(pid);
    const anonPolls = anonOf(pid);
    const tick0 = cpuTicksOf(pid);
    await new Promise((r) => setTimeout(r, 10_000));
    const cpuPct = ((cpuTicksOf(pid) - tick0) / 100 / 10) * 100; // ticks at 100 Hz, over 10 s
    const scrapes: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const r = await fetch(`${agent.url}/metrics`);
      const text = await r.text();
      scrapes.push(ms(t0));
      if (!text.includes('heaptap_site_inuse_bytes')) throw new Error('no site metrics');
    }
    const rssMetrics = rssOf(pid);
    const anonMetrics = anonOf(pid);
    const merged = await timedGet(agent, '/debug/pprof/heap');
    const rssMerged = rssOf(pid);
    const anonMerged = anonOf(pid);
    await new Promise((r) => setTimeout(r, 3000));
    const rssAfter = rssOf(pid);
    const anonAfter = anonOf(pid);
    // The agent closes the symbolizer's files and trims the C heap 2 s after the last
    // background build (up to 30 s when builds keep coming back soon after a release).
    await new Promise((r) => setTimeout(r, quick ? 0 : 30_000));
    const rssIdle = rssOf(pid);
    const anonIdle = anonOf(pid);
    await agent.stop();
    holder.kill();

    const cpu = cpus()[0]?.model ?? 'unknown CPU';
    say(`Command: \`npm run bench:sidecar${quick ? ' -- --quick' : ''}\` (bench/sidecar.ts), ${new Date().toISOString().slice(0, 10)}, ` +
      `${cpus().length} cores (${cpu}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.versions.node}.`);
    say('');
    say('Profile of one region: snapshot, symbolize, encode (ms).');
    say('Targets: 100k stacks in ≤ 250 ms, sidecar RSS ≤ 150 MB.');
    say('');
    say('Each cell: wall time (CPU time of the process in parentheses: on a busy machine the wall time also counts waiting for a core).');
    say('');
    say('Rows: synthetic regions whose stacks walk a call graph (a tenth as many distinct call sites as stacks, 6 to 24 frames, as real stacks share prefixes); the same size with frames drawn at random (no shared structure: the worst case for gzip); and a real region, Debian\'s python3 parsing and compiling ' + PYTHON_FILES + ' standard-library files at HEAPTAP_SAMPLE_RATE=1. Frames are real return addresses in libc.so.6 (ELF symbols) and in a copy of the heaptap addon (DWARF), or python3\'s own.');
    say('');
    say('Columns: read = the whole region (once per process); poll = counters only (every --poll); symbol tables = locations, functions and per-stack location lists, symbolizing every new address with a cold symbolizer (once per process, in the background as its stacks arrive, not on a request); encode = protobuf from the counters (warm JIT); gzip = BestSpeed. First profile = read + tables + first encode and gzip (a process seen for the first time); request = poll + encode + gzip, what each profile costs once the process is known.');
    say('');
    say('| region | stacks | frames | region file | read | poll | symbol tables | encode | gzip | pprof.gz | first profile | request |');
    say('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    const wc = (w: number, c: number) => `${fmt(w)} (${fmt(c)})`;
    for (const r of rows) {
      say(`| ${r.label} | ${r.stacks.toLocaleString('en-US')} | ${r.frames.toLocaleString('en-US')} | ${r.fileMb.toFixed(1)} MB | ${wc(r.read, r.readCpu)} | ${wc(r.poll, r.pollCpu)} | ${wc(r.buildCold, r.buildColdCpu)} | ${wc(r.buildWarm, r.buildWarmCpu)} | ${wc(r.encode, r.encodeCpu)} | ${r.pbKb.toFixed(0)} KB | ${wc(r.totalCold, r.readCpu + r.buildColdCpu + r.encodeCpu)} | ${wc(r.totalWarm, r.pollCpu + r.buildWarmCpu + r.encodeCpu)} |`);
    }
    say('');
    say('Through `heaptap agent` (child process started on a directory with the one region; /healthz fetched every 10 ms during the request). The first GET is sent as soon as the agent is ready and waits for the background build; the second is a request for a known process:');
    say('');
    say('| region | first GET /debug/pprof/heap | second | worst /healthz latency meanwhile | agent RSS after |');
    say('| --- | ---: | ---: | ---: | ---: |');
    for (const r of rows) {
      say(`| ${r.label} | ${fmt(r.httpCold)} ms | ${fmt(r.httpWarm)} ms | ${fmt(r.healthMax)} ms | ${mb(r.agentRss)} MB |`);
    }
    const big = rows.find((r) => r.label === (100_000).toLocaleString('en-US'));
    if (big) {
      say('');
      say(`100k stacks: a request ${fmt(big.totalWarm)} ms, the first profile ${fmt(big.totalCold)} ms (target ≤ ${TARGET_MS} ms: ${big.totalWarm <= TARGET_MS ? 'met' : 'missed'} per request, ${big.totalCold <= TARGET_MS ? 'met' : 'missed'} for the first).`);
    }
    say('');
    say(`Steady state: ${STEADY_PROCESSES} live processes of ${STEADY_STACKS.toLocaleString('en-US')} stacks each (tree-shaped, each with its own call sites in the same two libraries), one agent (--poll 1s).`);
    say('');
    say('| after | agent RSS | of which anonymous |');
    say('| --- | ---: | ---: |');
    say(`| 3 s of polling | ${mb(rssPolls)} MB | ${mb(anonPolls)} MB |`);
    say(`| 3 /metrics scrapes (${scrapes.map(fmt).join(', ')} ms; symbol tables were built in the background) | ${mb(rssMetrics)} MB | ${mb(anonMetrics)} MB |`);
    say(`| a merged /debug/pprof/heap of all ${STEADY_PROCESSES} (${fmt(merged.ms)} ms, ${(merged.bytes / 1024).toFixed(0)} KB, worst /healthz meanwhile ${fmt(merged.healthMaxMs)} ms) | ${mb(rssMerged)} MB | ${mb(anonMerged)} MB |`);
    say(`| 3 s more of polling | ${mb(rssAfter)} MB | ${mb(anonAfter)} MB |`);
    if (!quick) say(`| 30 s more (symbolizer files closed, C heap trimmed) | ${mb(rssIdle)} MB | ${mb(anonIdle)} MB |`);
    say('');
    say(`Idle polling cost: ${cpuPct.toFixed(1)}% of one core (CPU time over 10 s of polls). RSS target ≤ ${TARGET_RSS_MB} MB: ${Math.max(rssPolls, rssMetrics, rssMerged, rssAfter) <= TARGET_RSS_MB * 1048576 ? 'met' : 'missed'} (peak ${mb(Math.max(rssPolls, rssMetrics, rssMerged, rssAfter))} MB).`);

    if (write) {
      const file = join(root, 'bench/RESULTS.md');
      const text = readFileSync(file, 'utf8');
      const section = `## Sidecar cost\n\n${out.join('\n')}\n`;
      const start = text.indexOf('## Sidecar cost');
      let next = start < 0 ? -1 : text.indexOf('\n## ', start + 1);
      if (next >= 0) next += 1;
      const updated = start < 0
        ? text.replace(/\n*$/, '\n\n') + section
        : text.slice(0, start) + section + (next >= 0 ? '\n' + text.slice(next) : '');
      writeFileSync(file, updated);
      process.stdout.write(`wrote the "## Sidecar cost" section of ${file}\n`);
    }
  } finally {
    stopMapper();
    rmSync(work, { recursive: true, force: true });
  }
}

if ((import.meta as ImportMeta & { main?: boolean }).main) await main();
