// Running fixture programs under the preload and attributing what their regions hold to
// the fixtures' known allocation sites. Sites are found with `nm` (function name, address,
// size) per module: enough to check the preload without the sidecar's symbolizer.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { readRegion, stackFrames, type RegionSnapshot } from '../../src/region.ts';
import { fixtures, root } from '../helpers/heaptap.ts';
import { bound, execGroup, killGroup, spawnGroup } from '../helpers/procs.ts';

// The paths and the fixtures' printed truth are the CLI helpers' (one definition).
export { fixtures, root, truths, type Truth } from '../helpers/heaptap.ts';

// Bounded, and a timeout kills the command's whole process group (test/helpers/procs.ts).
const exec = execGroup;
export const preload = join(root, 'preload/build/libheaptap.so');

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  dir: string;
}

/** Runs a fixture with LD_PRELOAD=libheaptap.so and HEAPTAP_DIR set to a fresh directory. */
export async function runUnder(
  cmd: string[],
  env: Record<string, string> = {},
  opts: { preloadFirst?: string[]; preloadAfter?: string[]; timeoutMs?: number; dir?: string } = {},
): Promise<Run> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'heaptap-e2e-')));
  const ld = [...(opts.preloadFirst ?? []), preload, ...(opts.preloadAfter ?? [])].join(' ');
  const [bin, ...args] = cmd;
  const env2 = { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: ld, ...env };
  const r = await runBounded([bin!.includes('/') ? bin! : join(fixtures, bin!), ...args], env2, opts.timeoutMs);
  return { ...r, dir };
}

/** Runs a program with exactly env, in its own process group, so a timeout (stretched by
 * how busy the machine is) kills forked grandchildren too (a hung one would otherwise hold
 * the pipes open and the test would wait forever). */
export async function runBounded(
  argv: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
): Promise<Omit<Run, 'dir'>> {
  const [bin, ...args] = argv;
  const child = spawnGroup(null, bin!, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  child.on('error', (e) => (stderr += `spawn ${bin}: ${e.message}\n`));
  const timer = setTimeout(() => killGroup(child), bound(timeoutMs));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
    child.on('close', (c, s) => res([c, s])),
  );
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

export interface Interactive {
  pid: number;
  dir: string;
  /** Waits (at most ms) for a line of its stdout matching re. */
  line(re: RegExp, ms?: number): Promise<string>;
  /** Writes a line to its stdin. */
  send(text: string): void;
  /** Resolves when it has exited, with everything it printed. */
  done: Promise<Run>;
  /** SIGKILL to its process group (a test's teardown: every path ends it). */
  kill(): void;
}

/** As runUnder, for a fixture a test talks to while it runs (its stdin is a pipe). */
export async function startUnder(cmd: string[], env: Record<string, string> = {}, opts: { timeoutMs?: number } = {}): Promise<Interactive> {
  const dir = await mkdtemp(join(tmpdir(), 'heaptap-e2e-'));
  const [bin, ...args] = cmd;
  // Its own process group, tracked: killed at the latest when the test file is done.
  const child = spawnGroup(null, bin!.includes('/') ? bin! : join(fixtures, bin!), args, {
    env: { PATH: process.env.PATH, HEAPTAP_DIR: dir, LD_PRELOAD: preload, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d;
    for (const w of waiters) w();
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const kill = () => killGroup(child);
  const timer = setTimeout(kill, bound(opts.timeoutMs ?? 120_000));
  let exited = false;
  const done = new Promise<Run>((res) =>
    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      exited = true;
      clearTimeout(timer);
      for (const w of waiters) w();
      res({ code, signal, stdout, stderr, dir });
    }),
  );
  return {
    pid: child.pid!,
    dir,
    done,
    kill,
    send: (text) => child.stdin!.write(`${text}\n`),
    line: (re, ms = 60_000) => new Promise<string>((res, rej) => {
      const check = () => {
        const hit = stdout.split('\n').find((l) => re.test(l));
        if (hit !== undefined) finish(() => res(hit));
        else if (exited) finish(() => rej(new Error(`${bin} exited before printing ${re}: ${stderr}`)));
      };
      const t = setTimeout(() => finish(() => rej(new Error(`no line ${re} from ${bin} in ${ms} ms`))), ms);
      const finish = (f: () => void) => {
        clearTimeout(t);
        waiters.delete(check);
        f();
      };
      waiters.add(check);
      check();
    }),
  };
}

export async function regionsIn(dir: string): Promise<RegionSnapshot[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.heaptap')).sort();
  return names.map((n) => readRegion(join(dir, n)));
}

export async function cleanup(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

interface Sym {
  name: string;
  start: bigint;
  end: bigint;
}
const symCache = new Map<string, Promise<Sym[]>>();

/** Function symbols of an ELF file (file virtual addresses), sorted by start: the full
 * symbol table where there is one, and the dynamic one (all a stripped library keeps).
 * C++ names are demangled and lose their parameter lists. */
export function symbolsOf(path: string): Promise<Sym[]> {
  let p = symCache.get(path);
  if (!p) {
    const nm = (extra: string[]) =>
      exec('nm', ['-S', '--defined-only', '-C', ...extra, path], { maxBuffer: 64 << 20 })
        .then(({ stdout }) => stdout)
        .catch(() => '');
    p = Promise.all([nm([]), nm(['-D'])]).then((outs) => {
      const syms: Sym[] = [];
      for (const line of outs.join('\n').split('\n')) {
        const m = /^([0-9a-f]+) ([0-9a-f]+) [tTwWiI] (.+)$/.exec(line);
        if (!m) continue;
        // gcc's clones (site.constprop.0, .isra.0, .part.0, .cold) are the same site.
        const name = m[3]!.replace(/\(.*$/, '').replace(/@.*$/, '').replace(/\.(constprop|isra|part|cold)\b.*$/, '');
        syms.push({ name, start: BigInt('0x' + m[1]), end: BigInt('0x' + m[1]) + BigInt('0x' + m[2]) });
      }
      return syms.sort((a, b) => (a.start < b.start ? -1 : 1));
    });
    symCache.set(path, p);
  }
  return p;
}

/** The function names of a stack's frames, innermost first ('?' where unknown). */
export async function frameNames(snap: RegionSnapshot, frames: BigUint64Array): Promise<string[]> {
  const out: string[] = [];
  for (const pc of frames) {
    const m = snap.modules.find((mod) => pc >= mod.start && pc < mod.limit);
    if (!m || !m.path.startsWith('/')) {
      out.push('?');
      continue;
    }
    // Return addresses point after the call: look up pc - 1.
    const addr = pc - 1n - m.loadBias;
    const syms = await symbolsOf(m.path);
    const s = syms.find((x) => addr >= x.start && addr < x.end);
    out.push(s ? s.name : '?');
  }
  return out;
}

export interface SiteTotals {
  allocBytes: bigint;
  allocObjects: number;
  freeBytes: bigint;
  inuseBytes: bigint;
  samples: bigint;
}

/** Sums a region's counters by site: the innermost frame whose function name matches. */
export async function perSite(snap: RegionSnapshot, site: RegExp): Promise<Map<string, SiteTotals>> {
  const byId = new Map<number, number>();
  snap.stacks.ids.forEach((id, i) => byId.set(id, i));
  const out = new Map<string, SiteTotals>();
  const c = snap.counters;
  for (let i = 0; i < c.ids.length; i++) {
    const si = byId.get(c.ids[i]!);
    const names = si === undefined ? [] : await frameNames(snap, stackFrames(snap.stacks, si));
    const name = names.find((n) => site.test(n)) ?? '(other)';
    const t = out.get(name) ?? { allocBytes: 0n, allocObjects: 0, freeBytes: 0n, inuseBytes: 0n, samples: 0n };
    t.allocBytes += c.allocBytes[i]!;
    t.allocObjects += Number(c.allocObjects[i]!) / 65536;
    t.freeBytes += c.freeBytes[i]!;
    t.samples += c.samples[i]!;
    t.inuseBytes = t.allocBytes - t.freeBytes;
    out.set(name, t);
  }
  return out;
}
